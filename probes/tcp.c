// TCP resets sent and segments retransmitted by this host: a count per kind and
// reset reason, and the last EXAMPLES of each kind's 5-tuples. Resets come from a
// kprobe on tcp_v4_send_reset/tcp_v6_send_reset where the kernel has kprobes
// (USE_KPROBES), else from the tcp:tcp_send_reset tracepoint (which also says why);
// retransmits from tcp:tcp_retransmit_skb.
#include "probes.h"

// The tracepoint's reason field is an enum the headers BCC compiles against may not
// have: a 4-byte stand-in of our own (the names come from the format file).
#define sk_rst_reason xlb_sk_rst_reason
enum xlb_sk_rst_reason { XLB_RST_REASON_ANY };

#define KIND_RESET 0
#define KIND_RETRANSMIT 1
#define MAX_RST_REASONS 64

struct tcp_key {
    u32 kind;
    u32 reason;  // the reset's reason (tracepoint only; 0 from the kprobe)
};

BPF_PERCPU_HASH(tcp_events, struct tcp_key, u64, 256);
BPF_ARRAY(tcp_examples, struct tuple, 2 * EXAMPLES);
BPF_ARRAY(tcp_cursor, u32, 2);

static __always_inline void note(u32 kind, u32 reason, struct tuple *t) {
    struct tcp_key k = {.kind = kind, .reason = reason < MAX_RST_REASONS ? reason : 0};
    u64 zero = 0, *n = tcp_events.lookup_or_try_init(&k, &zero);
    if (n)
        (*n)++;
    if (!t)
        return;
    u32 *c = tcp_cursor.lookup(&kind);
    if (!c)
        return;
    t->time = bpf_ktime_get_ns();
    t->reason = reason;
    t->proto = IPPROTO_TCP;
    u32 slot = *c % EXAMPLES;  // racing CPUs may share a slot: examples, not counts
    *c = slot + 1;
    u32 idx = kind * EXAMPLES + slot;
    tcp_examples.update(&idx, t);
}

#ifdef USE_KPROBES
int kprobe__tcp_v4_send_reset(struct pt_regs *ctx) {
    note(KIND_RESET, 0, 0);
    return 0;
}

int kprobe__tcp_v6_send_reset(struct pt_regs *ctx) {
    note(KIND_RESET, 0, 0);
    return 0;
}
#else
static __always_inline void from_sockaddr(u8 *addr, u16 *port, u8 *family, const u8 *sa) {
    u16 fam = 0;
    bpf_probe_read_kernel(&fam, sizeof(fam), sa);
    bpf_probe_read_kernel(port, sizeof(*port), sa + 2);
    if (fam == 2) {           // AF_INET: sockaddr_in
        *family = 4;
        bpf_probe_read_kernel(addr, 4, sa + 4);
    } else if (fam == 10) {   // AF_INET6: sockaddr_in6
        *family = 6;
        bpf_probe_read_kernel(addr, 16, sa + 8);
    }
}

TRACEPOINT_PROBE(tcp, tcp_send_reset) {
    struct tuple t = {};
    from_sockaddr(t.saddr, &t.sport, &t.family, (const u8 *)args->saddr);
    from_sockaddr(t.daddr, &t.dport, &t.family, (const u8 *)args->daddr);
#ifdef RST_REASON
    note(KIND_RESET, args->reason, &t);
#else
    note(KIND_RESET, 0, &t);
#endif
    return 0;
}
#endif

TRACEPOINT_PROBE(tcp, tcp_retransmit_skb) {
    struct tuple t = {};
    t.sport = htons(args->sport);
    t.dport = htons(args->dport);
    if (args->family == 2) {
        t.family = 4;
        __builtin_memcpy(t.saddr, args->saddr, 4);
        __builtin_memcpy(t.daddr, args->daddr, 4);
    } else {
        t.family = 6;
        __builtin_memcpy(t.saddr, args->saddr_v6, 16);
        __builtin_memcpy(t.daddr, args->daddr_v6, 16);
    }
    note(KIND_RETRANSMIT, 0, &t);
    return 0;
}
