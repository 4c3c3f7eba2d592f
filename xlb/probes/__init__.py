"""The probes: what the kernel around the load balancer does (drops by reason, XDP
exceptions, NAPI polls, NET_RX softirq time, TCP resets and retransmits, BPF program
run time). The C is in probes/ at the repository top, one file per probe; each probe's
description (kind, target, needs, feeds) is its module here; manager.py attaches what
the running kernel supports and says plainly why not for the rest."""
