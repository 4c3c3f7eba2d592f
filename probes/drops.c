// Kernel drops by reason (skb:kfree_skb): a count per reason, per reason and
// watched address (the load balancer's VIPs and backends, filled in by the agent),
// and the last EXAMPLES dropped packets' 5-tuples per reason.
//
// The reason numbers are the running kernel's; their names are read from it (the
// tracepoint's format file, or BTF) by the agent, never compiled in here. The
// sk_buff offsets (SKB_HEAD, SKB_NH, SKB_TH) come from the running kernel's BTF too:
// the headers BCC compiles against may be another kernel's.
//
// It runs for every packet the kernel drops, so it reads as little as it can: the
// three sk_buff fields in one read where they are close (SKB_WIN bytes from
// SKB_WIN_AT), the IP header and the ports in one, the example written in place, and
// in a flood at most EXAMPLES examples per reason per jiffy (the clock read and the
// write are most of an example's cost; one packet of a flood is much like the next).
#include <net/dropreason.h>
#include "probes.h"

BPF_PERCPU_ARRAY(reasons, u64, MAX_REASONS);
BPF_HASH(watched, struct addr_key, u32, MAX_WATCHED);
BPF_PERCPU_HASH(by_addr, struct reason_addr, u64, MAX_WATCHED * 4);
BPF_ARRAY(examples, struct tuple, MAX_REASONS * EXAMPLES);
// per reason: the next example slot, and how many examples this jiffy has taken
struct cursor {
    u64 jiffy;
    u32 next;
    u32 taken;
};
BPF_ARRAY(cursor, struct cursor, MAX_REASONS);

// Count a drop from or to a watched address (id 0 counts each such packet once).
static __always_inline int count_addr(u32 reason, u8 family, const u8 *addr) {
    struct addr_key k = {};
    k.family = family;
    __builtin_memcpy(k.addr, addr, 16);
    u32 *id = watched.lookup(&k);
    if (!id)
        return 0;
    struct reason_addr ra = {.reason = reason, .id = *id};
    u64 zero = 0, *n = by_addr.lookup_or_try_init(&ra, &zero);
    if (n)
        (*n)++;
    return 1;
}

TRACEPOINT_PROBE(skb, kfree_skb) {
    u32 reason = (u32)args->reason;
    if (reason >= MAX_REASONS)
        reason = MAX_REASONS - 1;  // a subsystem's reason (high bits): "other"
    u64 *n = reasons.lookup(&reason);
    if (n)
        (*n)++;
    u16 proto = args->protocol;  // host order (the tracepoint applies ntohs)
    if (proto != 0x0800 && proto != 0x86DD)
        return 0;
    unsigned char *head = 0;
    u16 nh = 0, th = 0;
    void *skb = args->skbaddr;
#ifdef SKB_WIN
    u8 win[SKB_WIN];
    if (bpf_probe_read_kernel(win, sizeof(win), skb + SKB_WIN_AT))
        return 0;
    __builtin_memcpy(&head, win + (SKB_HEAD - SKB_WIN_AT), sizeof(head));
    __builtin_memcpy(&nh, win + (SKB_NH - SKB_WIN_AT), sizeof(nh));
    __builtin_memcpy(&th, win + (SKB_TH - SKB_WIN_AT), sizeof(th));
#else
    bpf_probe_read_kernel(&head, sizeof(head), skb + SKB_HEAD);
    bpf_probe_read_kernel(&nh, sizeof(nh), skb + SKB_NH);
    bpf_probe_read_kernel(&th, sizeof(th), skb + SKB_TH);
#endif
    if (!head)
        return 0;
    struct tuple t = {};
    u16 l4 = 0, ports[2] = {}, l4_read = 0;  // l4_read: where `ports` came from
    if (proto == 0x0800) {
        struct { struct iphdr ip; u16 ports[2]; } h;  // the ports too, if no IP options
        if (bpf_probe_read_kernel(&h, sizeof(h), head + nh) || h.ip.version != 4)
            return 0;
        t.family = 4;
        t.proto = h.ip.protocol;
        __builtin_memcpy(t.saddr, &h.ip.saddr, 4);
        __builtin_memcpy(t.daddr, &h.ip.daddr, 4);
        l4 = nh + h.ip.ihl * 4;
        l4_read = nh + sizeof(h.ip);
        __builtin_memcpy(ports, h.ports, sizeof(ports));
    } else {
        struct { struct ipv6hdr ip6; u16 ports[2]; } h;
        if (bpf_probe_read_kernel(&h, sizeof(h), head + nh) || h.ip6.version != 6)
            return 0;
        t.family = 6;
        t.proto = h.ip6.nexthdr;
        __builtin_memcpy(t.saddr, &h.ip6.saddr, 16);
        __builtin_memcpy(t.daddr, &h.ip6.daddr, 16);
        l4 = nh + sizeof(h.ip6);
        l4_read = l4;
        __builtin_memcpy(ports, h.ports, sizeof(ports));
    }
    if (th != 0xffff && th > nh)
        l4 = th;
    if (t.proto == IPPROTO_TCP || t.proto == IPPROTO_UDP) {
        if (l4 == l4_read || !bpf_probe_read_kernel(ports, sizeof(ports), head + l4)) {
            t.sport = ports[0];
            t.dport = ports[1];
        }
    }
    struct cursor *c = cursor.lookup(&reason);
    if (!c)
        return 0;
    u64 jiffy = bpf_jiffies64();
    if (c->jiffy != jiffy) {
        c->jiffy = jiffy;
        c->taken = 0;
    }
    if (c->taken < EXAMPLES) {  // racing CPUs may share a slot: examples, not counts
        c->taken++;
        t.time = bpf_ktime_get_ns();
        t.reason = reason;
        u32 slot = c->next % EXAMPLES;
        c->next = slot + 1;
        u32 idx = reason * EXAMPLES + slot;
        struct tuple *e = examples.lookup(&idx);
        if (e)
            __builtin_memcpy(e, &t, sizeof(t));
    }
    int hit = count_addr(reason, t.family, t.saddr);
    hit |= count_addr(reason, t.family, t.daddr);
    if (hit) {
        struct reason_addr ra = {.reason = reason, .id = 0};
        u64 zero = 0, *n = by_addr.lookup_or_try_init(&ra, &zero);
        if (n)
            (*n)++;
    }
    return 0;
}
