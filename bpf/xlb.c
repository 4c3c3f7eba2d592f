/* xlb XDP data plane: Katran-style L4 load balancing with Maglev and
 * IP-in-IP direct server return. Compiled by BCC at load time; the loader
 * defines PIN_DIR, RING_SIZE, RING_SLOTS, MAX_VIPS, MAX_BACKENDS, MAX_CONNS,
 * MAX_SNAT (entries of snat_rev) and TRACE_BUFFER (bytes of the trace ring
 * buffer: a power of two, at least a page).
 *
 * Path of a packet: parse (Ethernet, one 802.1Q tag, IPv4/IPv6, TCP/UDP) ->
 * a SNAT pool address? (a backend's reply) -> is the destination a VIP address?
 * (no: XDP_PASS, the host's own traffic; ctl's vip_filter answers most "no"s
 * without a lookup, and a plain TCP/UDP packet's "maybe" is settled by the VIP
 * lookup itself, vip_addrs asked only when that finds none)
 * -> fragments/options (IPv6: the extension-header chain) dropped -> ICMP:
 * pings answered, errors about a VIP flow sent to that flow's backend -> VIP
 * lookup (port, then port 0) -> connection table (TCP SYN always asks
 * Maglev; other TCP without an entry makes none; misses counted by kind:
 * SYN, non-SYN, UDP; a known flow's hash comes from its entry) -> Maglev ring ->
 * encapsulate to the backend (or ICMP too-big) -> XDP_TX. Every packet is
 * counted under exactly one reason, per RX queue and per action.
 *
 * SNAT (a VIP whose flags say so, for its new flows; a connection entry records
 * each flow's mode for life): the packet is rewritten in place (source = an
 * (address, port) of the pool claimed in snat_rev, destination = the backend)
 * and sent back out; a backend's reply to a pool address (a prefix compare on
 * the not-a-VIP path, where DSR traffic never goes) is looked up in snat_rev and
 * rewritten back to VIP -> client. DSR packets pay one byte compare (the
 * entry's mode) and, for a SYN, one flag test.
 *
 * Flow traces: while ctl's trace.mode is on, each packet that matches its
 * filter (and the 1-in-N sample) emits a struct xlb_trace_event into the ring
 * buffer `trace_events`; a full buffer counts the event lost (trace_stats).
 * The path functions record into struct parsed what the event needs (VIP,
 * backend, hash, path); the reason travels in the return value (verdict()).
 * With tracing off a packet pays one predictable branch (and, if it is not
 * balanced, the read of ctl that balanced packets make anyway).
 */
#include <uapi/linux/bpf.h>
#include "xlb_shared.h"  /* structs and enums mirrored by Python */
#include "parse.h"       /* Ethernet/VLAN, IPv4/IPv6, ports */

#define XLB_NSEC_PER_SEC 1000000000ULL
#ifndef TRACE_BUFFER
#define TRACE_BUFFER (1u << 20)
#endif

BPF_TABLE_PINNED("array", u32, struct xlb_meta, meta, 1, PIN_DIR "/meta");
BPF_TABLE_PINNED("array", u32, struct xlb_config, ctl, 1, PIN_DIR "/ctl");
BPF_TABLE_PINNED("hash", struct xlb_vip_key, struct xlb_vip_meta, vips, MAX_VIPS, PIN_DIR "/vips");
BPF_TABLE_PINNED("hash", struct xlb_addr_key, u32, vip_addrs, MAX_VIPS, PIN_DIR "/vip_addrs");
BPF_TABLE_PINNED("array", u32, struct xlb_vip_slot, vip_index, 2 * XLB_VIP_INDEX_SLOTS,
                 PIN_DIR "/vip_index");
BPF_TABLE_PINNED("array", u32, u32, rings, RING_SLOTS * RING_SIZE, PIN_DIR "/rings");
BPF_TABLE_PINNED("array", u32, struct xlb_backend, backends, MAX_BACKENDS, PIN_DIR "/backends");
BPF_TABLE_PINNED("lru_hash", struct xlb_flow_key, struct xlb_conn, conns, MAX_CONNS,
                 PIN_DIR "/conns", BPF_F_NO_COMMON_LRU);
/* SNAT's reverse translations, one per SNAT flow: common LRU, as a reply may arrive
 * on another CPU than the flow's packets (and a claim must see every CPU's). */
BPF_TABLE_PINNED("lru_hash", struct xlb_snat_key, struct xlb_snat_entry, snat_rev, MAX_SNAT,
                 PIN_DIR "/snat_rev");
BPF_TABLE_PINNED("percpu_array", u32, struct xlb_snat_stats, snat_stats, MAX_VIPS,
                 PIN_DIR "/snat_stats");
BPF_TABLE_PINNED("percpu_array", u32, struct xlb_queue_stats, queue_stats, XLB_MAX_QUEUES,
                 PIN_DIR "/queue_stats");
BPF_TABLE_PINNED("percpu_array", u32, struct xlb_traffic, vip_stats, MAX_VIPS,
                 PIN_DIR "/vip_stats");
BPF_TABLE_PINNED("percpu_array", u32, struct xlb_backend_stats, backend_stats, MAX_BACKENDS,
                 PIN_DIR "/backend_stats");
BPF_TABLE_PINNED("percpu_array", u32, struct xlb_traffic, reason_stats, XLB_MAX_REASONS,
                 PIN_DIR "/reason_stats");
BPF_TABLE_PINNED("percpu_array", u32, struct xlb_flow_guard, flow_guard, 1,
                 PIN_DIR "/flow_guard");
BPF_TABLE_PINNED("percpu_array", u32, struct xlb_traffic, miss_stats, XLB_MAX_MISSES,
                 PIN_DIR "/miss_stats");
BPF_TABLE_PINNED("percpu_array", u32, struct xlb_trace_stats, trace_stats, 1,
                 PIN_DIR "/trace_stats");
/* The coarse clock as last read on this CPU, and the jiffy it was read in: not pinned (a
 * cache, rebuilt by each program). */
struct xlb_clock {
    u64 jiffies;
    u64 ns;
};
BPF_PERCPU_ARRAY(clock_cache, struct xlb_clock, 1);
/* The trace ring buffer, pinned like the rest (BPF_RINGBUF_OUTPUT's table, with
 * BPF_TABLE_PINNED's section: BCC has no pinned ring buffer macro). */
struct trace_events_table_t {
    int key;
    u32 leaf;
    int (*ringbuf_output)(void *, u64, u64);
    void *(*ringbuf_reserve)(u64);
    void (*ringbuf_discard)(void *, u64);
    void (*ringbuf_submit)(void *, u64);
    u32 max_entries;
};
__attribute__((section("maps/ringbuf:" PIN_DIR "/trace_events")))
struct trace_events_table_t trace_events = {.max_entries = TRACE_BUFFER};
_Static_assert(XLB_R_MAX <= XLB_MAX_REASONS, "reason_stats needs a slot per reason");
_Static_assert(XLB_MISS_MAX <= XLB_MAX_MISSES, "miss_stats needs a slot per kind");
_Static_assert(XLB_R_MAX <= 255 && XLB_PATH_MAX <= 255, "trace events hold them in a byte");

/* The program's verdict: the XDP action, with the reason (enum xlb_reason) in
 * the bits above it. Every path returns one; xlb_main counts the reason and
 * returns the action. Without a map access, so the headers can use it too. */
static __always_inline int verdict(u32 reason, int action)
{
    return (int)(reason << 8) | action;
}
#define VERDICT_ACTION(v) ((v) & 0xFF)
#define VERDICT_REASON(v) ((u32)(v) >> 8)

/* What a packet needs next, when a step has not decided its verdict (a verdict is never
 * negative). Each big step is called from one place only (process(), balance()), so the
 * program holds one copy of it, not one per family or per way in: the verifier walks
 * each copy, and the SNAT port claim's 16 unrolled probes made ~300k instructions of it
 * when they were inlined six times. */
#define XLB_NEXT_BALANCE (-1)     /* a TCP/UDP packet to a VIP address: find the VIP */
#define XLB_NEXT_ICMP_ERROR (-2)  /* an ICMP error quoting a flow to a VIP address */
#define XLB_NEXT_REPLY (-3)       /* TCP/UDP to a SNAT pool address: a backend's reply */
#define XLB_NEXT_SNAT_NEW (-4)    /* a SNAT flow needs a new translation */

/* A connection-table miss of kind `miss` (enum xlb_miss), whatever the verdict. */
static __always_inline void count_miss(u32 miss, u64 bytes)
{
    struct xlb_traffic *t = miss_stats.lookup(&miss);
    if (t) {
        t->packets++;
        t->bytes += bytes;
    }
}

/* bpf_ktime_get_coarse_ns(), read at most once a jiffy per CPU: the coarse clock moves
 * only when a tick advances jiffies, so within a jiffy the cached value is what the helper
 * returns (give or take the tick's own update), and reading jiffies (inlined by the kernel)
 * and a per-CPU slot costs a few instructions where the helper call costs ~10 ns. */
static __always_inline u64 coarse_now(void)
{
    u32 zero = 0;
    struct xlb_clock *c = clock_cache.lookup(&zero);
    u64 j = bpf_jiffies64();
    if (c && c->jiffies == j)
        return c->ns;
    u64 now = bpf_ktime_get_coarse_ns();
    if (c) {
        c->jiffies = j;
        c->ns = now;
    }
    return now;
}

/* These call verdict(), so they come after it. */
#include "encap.h"  /* write_l2, encapsulate */
#include "icmp.h"   /* icmp4_too_big, icmp6_too_big */
#include "snat.h"   /* snat_candidate, snat_send */

/* murmur3-style mixing over the flow's source and ports: strong enough that
 * neighbouring client ports spread over the ring (a weak mixer sent every
 * flow to one backend in the prototype). */
static __always_inline u32 mix32(u32 h, u32 k)
{
    k *= 0xcc9e2d51;
    k = (k << 15) | (k >> 17);
    k *= 0x1b873593;
    h ^= k;
    h = (h << 13) | (h >> 19);
    return h * 5 + 0xe6546b64;
}

static __always_inline u32 flow_hash(const struct xlb_flow_key *f)
{
    u32 h = 0x9747b28c;
    h = mix32(h, f->src[0]);
    h = mix32(h, f->src[1]);
    h = mix32(h, f->src[2]);
    h = mix32(h, f->src[3]);
    h = mix32(h, ((u32)f->sport << 16) | f->dport);
    h = mix32(h, f->proto);
    h ^= h >> 16;
    h *= 0x85ebca6b;
    h ^= h >> 13;
    h *= 0xc2b2ae35;
    h ^= h >> 16;
    return h;
}

/* The backend of the VIP's Maglev ring slot for `hash` (its id in *backend_id),
 * or 0 if the slot has none usable. */
static __always_inline struct xlb_backend *maglev(const struct xlb_vip_meta *vip, u32 hash,
                                                  u32 *backend_id)
{
    u32 idx = vip->ring_slot * RING_SIZE + hash % RING_SIZE;
    u32 *id = rings.lookup(&idx);
    if (!id || *id == XLB_NO_BACKEND)
        return 0;
    *backend_id = *id;
    struct xlb_backend *be = backends.lookup(backend_id);
    if (!be || !(be->flags & XLB_BACKEND_VALID))
        return 0;
    return be;
}

/* May this CPU create one more connection entry now? At most cfg->new_flow_limit
 * a second (0: no limit), so a flood of new flows cannot push the established
 * ones out of the LRU table; flows over the limit are balanced without an entry.
 * Only new flows get here. */
static __always_inline int may_record(const struct xlb_config *cfg, u64 now)
{
    u32 limit = cfg->new_flow_limit;
    if (!limit)
        return 1;
    u32 zero = 0;
    struct xlb_flow_guard *g = flow_guard.lookup(&zero);
    if (!g)
        return 1;
    if (now - g->window_ns >= XLB_NSEC_PER_SEC) {  /* per-CPU: no other writer */
        g->window_ns = now;
        g->count = 0;
    }
    if (g->count >= limit)
        return 0;
    g->count++;
    return 1;
}

/* Per-VIP and per-backend counters of a packet sent to a backend. */
static __always_inline void count_sent(u32 vip_id, u32 backend_id, u64 bytes, int new_conn,
                                       int touched, u64 epoch)
{
    struct xlb_traffic *vs = vip_stats.lookup(&vip_id);
    if (vs) {
        vs->packets++;
        vs->bytes += bytes;
    }
    struct xlb_backend_stats *bs = backend_stats.lookup(&backend_id);
    if (bs) {
        bs->packets++;
        bs->bytes += bytes;
        bs->new_conns += new_conn;
        if (touched) {
            /* per-CPU map: no other writer; a slot from an older epoch restarts */
            u32 slot = epoch & 1;
            if (bs->active_epoch[slot] != epoch) {
                bs->active_epoch[slot] = epoch;
                bs->active[slot] = 0;
            }
            bs->active[slot]++;
        }
    }
}

/* Refresh a connection entry's clock: at most once a second, and on the flow's first
 * packet of an activity epoch. Returns 1 for that first packet (the flow counts as
 * active). It compares with the old last_seen, before the refresh; a new epoch always
 * refreshes it, so a flow counts once per epoch. */
static __always_inline int conn_touch(struct xlb_conn *c, u64 now, u64 epoch)
{
    u64 seen = c->last_seen_ns;
    int touched = (seen >> XLB_ACTIVE_EPOCH_SHIFT) < epoch;
    if (touched || (s64)(now - seen) > (s64)XLB_NSEC_PER_SEC)  /* signed: as udp_flow_over */
        c->last_seen_ns = now;
    return touched;
}

/* A UDP flow ends only in silence: one idle past the UDP timeout (snat_udp_timeout)
 * whose VIP has changed mode since is a new flow, in the VIP's mode now. (A TCP flow
 * keeps its mode as long as its entry lives.) */
static __always_inline int udp_flow_over(const struct xlb_conn *c,
                                         const struct xlb_vip_meta *vip,
                                         const struct xlb_config *cfg, u64 now)
{
    u8 mode = (vip->flags & XLB_VIP_F_SNAT) ? XLB_MODE_SNAT : XLB_MODE_DSR;
    return c->mode != mode &&  /* signed: another CPU may have written a later time */
           (s64)(now - c->last_seen_ns) > (s64)((u64)cfg->snat_udp_timeout * XLB_NSEC_PER_SEC);
}

/* Nanoseconds an idle translation keeps its (address, port) from new flows. */
static __always_inline u64 snat_timeout_ns(const struct xlb_config *cfg, u8 proto, u32 flags)
{
    u32 secs = cfg->snat_udp_timeout;
    if (proto == IPPROTO_TCP)
        secs = (flags & XLB_CONN_F_CLOSING) ? cfg->snat_close_timeout : cfg->snat_tcp_timeout;
    return (u64)secs * XLB_NSEC_PER_SEC;
}

/* Refresh a translation's clock, at most once a second (signed: another CPU may have
 * written a later time). */
static __always_inline void snat_touch(struct xlb_snat_entry *e, u64 now)
{
    if ((s64)(now - e->last_seen_ns) > (s64)XLB_NSEC_PER_SEC)
        e->last_seen_ns = now;
}

/* Claim an (address, port) of the pool for p's new flow to backend `be`: the first of
 * XLB_SNAT_PROBES candidates from hash % n that is free (the BPF_NOEXIST insert: one CPU
 * wins a key), already holds this very flow, or sat idle past its timeout (taken over by
 * the CPU whose compare-and-swap of last_seen_ns wins). Never two flows on one key. Fills
 * k (the key replies will arrive with). Returns 1: a new translation, 2: the flow's own
 * found again, 0: every candidate is taken. */
static __always_inline int snat_claim(const struct xlb_config *cfg, const struct parsed *p,
                                      const struct xlb_backend *be, u32 backend_id,
                                      u32 vip_id, u32 hash, u64 now, struct xlb_snat_key *k)
{
    u64 n = snat_candidates(cfg, be->family);
    if (!n)
        return 0;
    __builtin_memcpy(k->backend_addr, be->addr, sizeof(k->backend_addr));
    k->backend_port = p->flow.dport;
    k->proto = p->flow.proto;
    k->family = be->family;
    struct xlb_snat_entry ne = {.last_seen_ns = now, .vip_id = vip_id,
                                .backend_id = backend_id};
    __builtin_memcpy(&ne.flow, &p->flow, sizeof(ne.flow));
    u64 i = hash % n;
#pragma unroll
    for (int j = 0; j < XLB_SNAT_PROBES; j++) {
        snat_candidate(cfg, k, i);
        if (snat_rev.insert(k, &ne) == 0)
            return 1;
        struct xlb_snat_entry *e = snat_rev.lookup(k);
        if (e) {
            if (flow_eq(&e->flow, &p->flow)) {  /* its entry outlived its connection entry */
                e->last_seen_ns = now;
                e->vip_id = vip_id;
                e->flags = 0;
                return 2;
            }
            u64 seen = e->last_seen_ns;
            if ((s64)(now - seen) > (s64)snat_timeout_ns(cfg, k->proto, e->flags) &&
                __sync_val_compare_and_swap(&e->last_seen_ns, seen, now) == seen) {
                __builtin_memcpy(&e->flow, &p->flow, sizeof(e->flow));
                e->vip_id = vip_id;
                e->backend_id = backend_id;
                e->flags = 0;
                return 1;
            }
        }
        if (++i >= n)
            i = 0;
    }
    return 0;
}

/* A new SNAT flow to backend `be` (Maglev's pick, or the flow's own backend when its
 * translation was lost): claim an (address, port), record the connection entry with
 * mode SNAT, count, translate and send. A flow that cannot get an entry cannot be
 * translated back: over the new-entry limit, it is dropped. */
static __always_inline int snat_new(struct xdp_md *ctx, struct parsed *p,
                                    const struct xlb_vip_meta *vip,
                                    const struct xlb_config *cfg, const struct xlb_backend *be,
                                    u32 backend_id, u32 hash, u64 now, u64 epoch, u64 bytes)
{
    u32 vip_id = vip->vip_id;
    p->mode = XLB_MODE_SNAT;
    p->backend_id = backend_id;
    if (!may_record(cfg, now))
        return verdict(XLB_R_DROP_SNAT_FLOW_LIMIT, XDP_DROP);
    struct xlb_snat_stats *ss = snat_stats.lookup(&vip_id);
    struct xlb_snat_key k = {};
    int got = be->family == p->flow.family ? snat_claim(cfg, p, be, backend_id, vip_id, hash,
                                                        now, &k) : 0;
    if (!got) {
        if (ss)
            ss->no_port++;
        return verdict(XLB_R_DROP_SNAT_NO_PORT, XDP_DROP);
    }
    struct xlb_conn nc = {.backend_id = backend_id, .vip_id = vip_id, .last_seen_ns = now,
                          .snat_port = k.snat_port, .mode = XLB_MODE_SNAT, .hash = hash};
    __builtin_memcpy(nc.snat_addr, k.snat_addr, sizeof(nc.snat_addr));
    conns.update(&p->flow, &nc);
    count_sent(vip_id, backend_id, bytes, 1, 1, epoch);
    if (ss) {
        ss->packets++;
        ss->bytes += bytes;
        ss->translations += got == 1;
    }
    struct snat_addrs a = {.sport = k.snat_port, .dport = p->flow.dport};
    __builtin_memcpy(a.src, k.snat_addr, sizeof(a.src));
    __builtin_memcpy(a.dst, be->addr, sizeof(a.dst));
    return snat_send(ctx, p, cfg, &a, XLB_R_TX_SNAT);
}

/* A packet of a flow whose connection entry says SNAT (whatever the VIP's mode is now):
 * its translation if snat_rev still holds it for this flow; a SYN whose Maglev pick is
 * another backend, or a UDP packet whose translation was lost, makes a new one; TCP
 * (not a SYN) whose translation was lost cannot be translated: dropped. */
static __always_inline int snat_flow(struct xdp_md *ctx, struct parsed *p,
                                     const struct xlb_vip_meta *vip,
                                     const struct xlb_config *cfg, struct xlb_conn *c,
                                     u32 hash, u64 now, u64 epoch, u64 bytes, int tcp, int syn,
                                     struct xlb_backend **new_be, u32 *new_id)
{
    p->mode = XLB_MODE_SNAT;
    u32 backend_id = c->backend_id;
    struct xlb_backend *be = backends.lookup(&backend_id);
    struct xlb_snat_entry *e = 0;
    if (be && (be->flags & XLB_BACKEND_VALID)) {
        struct xlb_snat_key k = {.snat_port = c->snat_port, .backend_port = p->flow.dport,
                                 .proto = p->flow.proto, .family = be->family};
        __builtin_memcpy(k.snat_addr, c->snat_addr, sizeof(k.snat_addr));
        __builtin_memcpy(k.backend_addr, be->addr, sizeof(k.backend_addr));
        e = snat_rev.lookup(&k);
        if (e && !flow_eq(&e->flow, &p->flow))
            e = 0;  /* taken over by another flow: no longer this one's */
    } else {
        be = 0;
    }
    u8 path = XLB_PATH_CONN;
    if (syn) {  /* a SYN asks Maglev; the same backend keeps the translation (a retransmit) */
        count_miss(XLB_MISS_TCP_SYN, bytes);
        u32 pick = XLB_NO_BACKEND;
        struct xlb_backend *m = maglev(vip, hash, &pick);
        if (!m)
            return verdict(XLB_R_DROP_NO_BACKEND, XDP_DROP);
        if (!e || pick != backend_id) {
            if (e)  /* the old connection's translation: free it soon */
                e->flags |= XLB_CONN_F_CLOSING;
            p->path = XLB_PATH_MAGLEV_SYN;
            *new_be = m;
            *new_id = pick;
            return XLB_NEXT_SNAT_NEW;
        }
        e->flags = 0;
        path = XLB_PATH_MAGLEV_SYN;
    } else if (!e) {
        if (tcp) {
            p->backend_id = be ? backend_id : XLB_NO_BACKEND;
            return verdict(XLB_R_DROP_SNAT_NO_ENTRY, XDP_DROP);
        }
        p->path = XLB_PATH_MAGLEV_STALE;  /* UDP: a new translation, the same backend */
        if (!be) {
            be = maglev(vip, hash, &backend_id);
            if (!be)
                return verdict(XLB_R_DROP_NO_BACKEND, XDP_DROP);
        }
        *new_be = be;
        *new_id = backend_id;
        return XLB_NEXT_SNAT_NEW;
    }
    if (!be)  /* e is only found with a valid backend; the verifier wants to know */
        return verdict(XLB_R_DROP_NO_BACKEND, XDP_DROP);
    int touched = conn_touch(c, now, epoch);
    snat_touch(e, now);
    if (tcp && (p->tcp_flags & (XLB_TCP_FIN | XLB_TCP_RST)))
        e->flags |= XLB_CONN_F_CLOSING;
    p->backend_id = backend_id;
    p->path = path;
    u32 vip_id = vip->vip_id;
    count_sent(vip_id, backend_id, bytes, 0, touched, epoch);
    struct xlb_snat_stats *ss = snat_stats.lookup(&vip_id);
    if (ss) {
        ss->packets++;
        ss->bytes += bytes;
    }
    struct snat_addrs a = {.sport = c->snat_port, .dport = p->flow.dport};
    __builtin_memcpy(a.src, c->snat_addr, sizeof(a.src));
    __builtin_memcpy(a.dst, be->addr, sizeof(a.dst));
    return snat_send(ctx, p, cfg, &a, XLB_R_TX_SNAT);
}

/* A backend's reply to a pool address and port (p->flow as it arrived, TCP or UDP):
 * snat_rev says whose flow it is; rewritten to VIP -> client and sent. p->flow then
 * becomes the client's flow (what a trace event reports). */
static __always_inline int snat_reply(struct xdp_md *ctx, struct parsed *p,
                                      const struct xlb_config *cfg, u64 bytes)
{
    struct xlb_snat_key k = {.snat_port = p->flow.dport, .backend_port = p->flow.sport,
                             .proto = p->flow.proto, .family = p->flow.family};
    __builtin_memcpy(k.snat_addr, p->flow.dst, sizeof(k.snat_addr));
    __builtin_memcpy(k.backend_addr, p->flow.src, sizeof(k.backend_addr));
    p->mode = XLB_MODE_SNAT;
    struct xlb_snat_entry *e = snat_rev.lookup(&k);
    if (!e)
        return verdict(XLB_R_DROP_SNAT_NO_ENTRY, XDP_DROP);
    snat_touch(e, coarse_now());
    if (p->flow.proto == IPPROTO_TCP && (p->tcp_flags & (XLB_TCP_FIN | XLB_TCP_RST)))
        e->flags |= XLB_CONN_F_CLOSING;
    u32 vip_id = e->vip_id;
    p->vip_id = vip_id;
    p->backend_id = e->backend_id;
    p->path = XLB_PATH_CONN;
    const struct xlb_flow_key *f = &e->flow;
    if (f->family != k.family || f->proto != k.proto)  /* never made so */
        return verdict(XLB_R_DROP_SNAT_NO_ENTRY, XDP_DROP);
    struct xlb_snat_stats *ss = snat_stats.lookup(&vip_id);
    if (ss) {
        ss->reply_packets++;
        ss->reply_bytes += bytes;
    }
    struct snat_addrs a = {.sport = f->dport, .dport = f->sport};
    __builtin_memcpy(a.src, f->dst, sizeof(a.src));
    __builtin_memcpy(a.dst, f->src, sizeof(a.dst));
    int v = snat_send(ctx, p, cfg, &a, XLB_R_TX_SNAT_REPLY);
    __builtin_memcpy(&p->flow, f, sizeof(p->flow));  /* for the trace: the client's flow */
    return v;
}

/* Pick the backend (connection table, else Maglev), count, and send. Only a
 * TCP SYN or a UDP packet of a flow the table does not know makes an entry
 * (while may_record allows): any other TCP packet without one is balanced by
 * Maglev alone, so a flood of ACKs with made-up ports cannot fill the table.
 * Records the VIP, hash, backend and path in p (a trace event reports them). */
static __always_inline int balance(struct xdp_md *ctx, struct parsed *p,
                                   const struct xlb_vip_meta *vip,
                                   const struct xlb_config *cfg, u64 bytes)
{
    u64 now = coarse_now();
    u64 epoch = now >> XLB_ACTIVE_EPOCH_SHIFT;
    u32 backend_id = XLB_NO_BACKEND;
    struct xlb_backend *be = 0;
    u32 reason = XLB_R_TX_ENCAP;
    int new_conn = 0;
    int touched = 0;  /* the flow's first packet in this epoch: counted as active */
    p->vip_id = vip->vip_id;

    int tcp = p->flow.proto == IPPROTO_TCP;
    int syn = tcp && (p->tcp_flags & 0x12) == 0x02;
    struct xlb_conn *c = 0;
    u32 hash = 0;  /* a known flow's is in its entry: computed only when it is not */
    u8 path = XLB_PATH_CONN;
    if (!syn || (vip->flags & XLB_VIP_F_SNAT))  /* a SYN to a SNAT VIP may be a retransmit */
        c = conns.lookup(&p->flow);
    if (c)
        hash = c->hash;
    if (!hash)
        hash = flow_hash(&p->flow);
    p->hash = hash;
    if (c) {
        if (!tcp && udp_flow_over(c, vip, cfg, now))
            c = 0;  /* a new flow (a DSR one's entry is written over, a SNAT one's too) */
        if (c && c->mode == XLB_MODE_SNAT) {
            int v = snat_flow(ctx, p, vip, cfg, c, hash, now, epoch, bytes, tcp, syn, &be,
                              &backend_id);
            if (v != XLB_NEXT_SNAT_NEW)
                return v;
            if (!be)  /* snat_flow names one; the verifier wants to know */
                return verdict(XLB_R_DROP_NO_BACKEND, XDP_DROP);
            goto snat_new_flow;
        }
        if (syn)
            c = 0;  /* a DSR flow's entry: the SYN starts a new flow, in SNAT */
        if (c) {
            backend_id = c->backend_id;
            be = backends.lookup(&backend_id);
            if (be && (be->flags & XLB_BACKEND_VALID)) {
                touched = conn_touch(c, now, epoch);
            } else {
                be = 0;
            }
        }
    }
    if (!c)  /* counted before Maglev: a miss that ends in a drop is a miss all the same */
        count_miss(syn ? XLB_MISS_TCP_SYN : tcp ? XLB_MISS_TCP_NON_SYN : XLB_MISS_UDP, bytes);
    if (!be) {
        be = maglev(vip, hash, &backend_id);
        if (!be)
            return verdict(XLB_R_DROP_NO_BACKEND, XDP_DROP);
        if (c) {
            /* an entry whose backend is gone: point it at the new one in place
             * (no new entry, so nothing else is pushed out) */
            c->backend_id = backend_id;
            c->vip_id = vip->vip_id;
            c->last_seen_ns = now;
            c->hash = hash;
            new_conn = 1;
            touched = 1;
            path = XLB_PATH_MAGLEV_STALE;
        } else {
            path = syn ? XLB_PATH_MAGLEV_SYN : XLB_PATH_MAGLEV;
            if (tcp && !syn) {
                reason = XLB_R_TX_ENCAP_NO_ENTRY;  /* whatever the VIP's mode: see README */
            } else if (vip->flags & XLB_VIP_F_SNAT) {
                p->path = path;
                goto snat_new_flow;
            } else if (!may_record(cfg, now)) {
                reason = XLB_R_TX_ENCAP_FLOW_LIMIT;
            } else {
                struct xlb_conn nc = {.backend_id = backend_id, .vip_id = vip->vip_id,
                                      .last_seen_ns = now, .hash = hash};
                conns.update(&p->flow, &nc);
                new_conn = 1;
                touched = 1;
            }
        }
    }
    p->backend_id = backend_id;
    p->path = path;
    count_sent(vip->vip_id, backend_id, bytes, new_conn, touched, epoch);

    u32 outer = be->family == XLB_AF_INET ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);
    if (p->inner_len + outer > cfg->mtu) {
        u32 room = cfg->mtu - outer;
        if (p->flow.family == XLB_AF_INET)
            return icmp4_too_big(ctx, p->l2_len, room);
        return icmp6_too_big(ctx, p->l2_len, room);
    }
    return encapsulate(ctx, p, be, cfg, hash, reason);
snat_new_flow:  /* the only call: see XLB_NEXT_SNAT_NEW */
    return snat_new(ctx, p, vip, cfg, be, backend_id, hash, now, epoch, bytes);
}

/* An ICMP error about a VIP flow (p->flow: the quoted packet's flow turned
 * around, client to VIP) goes whole, encapsulated, to the backend that flow's
 * own packets reach: its connection entry, else Maglev. Nothing is recorded in
 * the table (p gets what a trace event reports). */
static __always_inline int balance_icmp_error(struct xdp_md *ctx, struct parsed *p,
                                              const struct xlb_vip_meta *vip,
                                              const struct xlb_config *cfg, u64 bytes)
{
    u32 hash = flow_hash(&p->flow);
    u32 backend_id = XLB_NO_BACKEND;
    struct xlb_backend *be = 0;
    u8 path = XLB_PATH_CONN;
    p->vip_id = vip->vip_id;
    p->hash = hash;
    struct xlb_conn *c = conns.lookup(&p->flow);
    if (c && c->mode == XLB_MODE_SNAT) {  /* not translated (README's limits) */
        p->mode = XLB_MODE_SNAT;
        return verdict(XLB_R_PASS_VIP_OTHER_PROTO, XDP_PASS);
    }
    if (c) {
        backend_id = c->backend_id;
        be = backends.lookup(&backend_id);
        if (be && !(be->flags & XLB_BACKEND_VALID))
            be = 0;
    }
    if (!be) {
        be = maglev(vip, hash, &backend_id);
        if (!be)
            return verdict(XLB_R_DROP_NO_BACKEND, XDP_DROP);
        path = XLB_PATH_MAGLEV;
    }
    p->backend_id = backend_id;
    p->path = path;
    u32 outer = be->family == XLB_AF_INET ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);
    if (p->inner_len + outer > cfg->mtu)  /* no ICMP answer to an ICMP error */
        return verdict(XLB_R_DROP_ICMP_TOO_BIG, XDP_DROP);
    count_sent(vip->vip_id, backend_id, bytes, 0, 0, 0);
    return encapsulate(ctx, p, be, cfg, hash, XLB_R_TX_ENCAP_ICMP_ERROR);
}

static __always_inline int is_vip_addr(struct parsed *p)
{
    struct xlb_addr_key k = {};
    __builtin_memcpy(k.addr, p->flow.dst, sizeof(k.addr));
    k.family = p->flow.family;
    return vip_addrs.lookup(&k) != 0;
}

/* The bit of ctl's vip_filter for address a (4 words; xlb/dataplane/manager.py
 * vip_filter() computes the same). */
static __always_inline u32 vip_filter_bit(const u32 *a)
{
    return 1u << (((a[0] ^ a[1] ^ a[2] ^ a[3]) * 0x9E3779B1u) >> 27);
}

/* May the destination be a VIP address? With a filter, a clear bit says no at the cost of
 * a multiply; a set bit says "maybe" (confirmed later, when it matters: see process()).
 * Without one (0: an older agent wrote ctl, or too many addresses), vip_addrs says. */
static __always_inline int maybe_vip_addr(const struct xlb_config *cfg, struct parsed *p)
{
    u32 f = cfg->vip_filter;
    return f ? (f & vip_filter_bit(p->flow.dst)) != 0 : is_vip_addr(p);
}

/* Is the IP packet of p->inner_len bytes at ip whole in the frame? Beyond the
 * first buffer (a frame larger than one page arrives as several: the program
 * sees the first) it counts as whole if the frame holds it: it is then larger
 * than any mtu the config allows, and is answered "too big". */
static __always_inline int whole(struct xdp_md *ctx, struct parsed *p, void *ip, void *end)
{
    if (ip + p->inner_len <= end)
        return 1;
    return bpf_xdp_get_buff_len(ctx) >= p->l2_len + p->inner_len;
}

/* ICMP to a VIP address (IPv4 header without options, whole packet in the
 * first buffer): echo requests answered, "destination unreachable" (with
 * "fragmentation needed") sent to the backend of the flow it quotes. */
static __always_inline int icmp4_to_vip(struct xdp_md *ctx, struct parsed *p, struct iphdr *ip,
                                        void *end)
{
    struct icmphdr *icmp = (void *)(ip + 1);
    if (p->inner_len < sizeof(*ip) + sizeof(*icmp) || (void *)ip + p->inner_len > end ||
        (void *)(icmp + 1) > end)
        return verdict(XLB_R_DROP_MALFORMED, XDP_DROP);
    if (icmp->type == ICMP_ECHO)
        return icmp4_echo(ctx, p->l2_len);
    if (icmp->type != ICMP_DEST_UNREACH)
        return verdict(XLB_R_PASS_VIP_OTHER_PROTO, XDP_PASS);
    /* the quote: the IP header of a packet the VIP sent (a reply), and its ports */
    struct iphdr *q = (void *)(icmp + 1);
    u16 *ports = (void *)(q + 1);
    if ((void *)(ports + 2) > end || q->version != 4)
        return verdict(XLB_R_DROP_MALFORMED, XDP_DROP);
    if (q->ihl != 5 || (q->frag_off & bpf_htons(IP_FRAG_OFFSET)) ||
        (q->protocol != IPPROTO_TCP && q->protocol != IPPROTO_UDP))
        return verdict(XLB_R_PASS_VIP_OTHER_PROTO, XDP_PASS);
    p->flow.src[0] = q->daddr;
    p->flow.dst[0] = q->saddr;
    p->flow.sport = ports[1];
    p->flow.dport = ports[0];
    p->flow.proto = q->protocol;
    return XLB_NEXT_ICMP_ERROR;
}

/* Is the (IPv4) destination an address of the SNAT pool? Pools are never VIP addresses. */
static __always_inline int in_pool4(const struct xlb_config *cfg, u32 daddr)
{
    return cfg->has_snat4 && (daddr & ~cfg->snat4_mask) == cfg->snat4_net;
}

static __always_inline int in_pool6(const struct xlb_config *cfg, const u32 *d)
{
    /* pools are /96 or longer: host bits in word 3 */
    return cfg->has_snat6 && !((d[0] ^ cfg->snat6_net[0]) | (d[1] ^ cfg->snat6_net[1]) |
                               (d[2] ^ cfg->snat6_net[2]) |
                               ((d[3] & ~cfg->snat6_mask[3]) ^ cfg->snat6_net[3]));
}

/* To a pool address over IPv4: TCP/UDP (no options, not a fragment) is a reply to
 * translate back; anything else is not translated (passed, as not for a VIP). */
static __always_inline int reply_v4(struct parsed *p, struct iphdr *ip, void *end)
{
    if ((ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP) || ip->ihl != 5 ||
        (ip->frag_off & bpf_htons(IP_MF_OFFSET)))
        return verdict(XLB_R_PASS_NOT_VIP, XDP_PASS);
    p->inner_len = bpf_ntohs(ip->tot_len);
    u32 l4_min = ip->protocol == IPPROTO_TCP ? sizeof(struct tcphdr) : sizeof(struct udphdr);
    if (p->inner_len < sizeof(*ip) + l4_min || parse_l4(ip + 1, end, p))
        return verdict(XLB_R_DROP_MALFORMED, XDP_DROP);
    return XLB_NEXT_REPLY;
}

/* To a pool address over IPv6: TCP/UDP without extension headers is a reply. */
static __always_inline int reply_v6(struct parsed *p, struct ipv6hdr *ip6, void *end)
{
    if (ip6->nexthdr != IPPROTO_TCP && ip6->nexthdr != IPPROTO_UDP)
        return verdict(XLB_R_PASS_NOT_VIP, XDP_PASS);
    p->inner_len = sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
    u32 l4_min = ip6->nexthdr == IPPROTO_TCP ? sizeof(struct tcphdr) : sizeof(struct udphdr);
    if (p->inner_len < sizeof(*ip6) + l4_min || parse_l4(ip6 + 1, end, p))
        return verdict(XLB_R_DROP_MALFORMED, XDP_DROP);
    return XLB_NEXT_REPLY;
}

static __always_inline int process_v4(struct xdp_md *ctx, struct parsed *p,
                                      const struct xlb_config *cfg)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct iphdr *ip = ipv4_hdr(data, end, p->l2_len);
    if (!ip)
        return verdict(XLB_R_DROP_MALFORMED, XDP_DROP);
    p->flow.family = XLB_AF_INET;
    p->flow.src[0] = ip->saddr;
    p->flow.dst[0] = ip->daddr;
    p->flow.proto = ip->protocol;
    /* a pool address (never a VIP's: config checks): a backend's reply to a SNAT flow */
    if (in_pool4(cfg, ip->daddr))
        return reply_v4(p, ip, end);
    /* a TCP/UDP packet that could be balanced need not confirm its address before its VIP
     * is looked up (process() does, if that finds none or the packet is malformed); any
     * other verdict needs it now */
    int plain = (ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP) && ip->ihl == 5 &&
                !(ip->frag_off & bpf_htons(IP_MF_OFFSET));
    if (!maybe_vip_addr(cfg, p) || (cfg->vip_filter && !plain && !is_vip_addr(p)))
        return verdict(XLB_R_PASS_NOT_VIP, XDP_PASS);
    p->unconfirmed = plain && cfg->vip_filter;
    if (ip->frag_off & bpf_htons(IP_MF_OFFSET))
        return verdict(XLB_R_DROP_FRAGMENT, XDP_DROP);
    if (ip->ihl != 5)
        return verdict(XLB_R_DROP_IP_OPTIONS, XDP_DROP);
    p->inner_len = bpf_ntohs(ip->tot_len);
    p->tos = ip->tos;
    if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP) {
        if (ip->protocol == IPPROTO_ICMP)
            return icmp4_to_vip(ctx, p, ip, end);
        return verdict(XLB_R_PASS_VIP_OTHER_PROTO, XDP_PASS);
    }
    u32 l4_min = ip->protocol == IPPROTO_TCP ? sizeof(struct tcphdr) : sizeof(struct udphdr);
    if (p->inner_len < sizeof(*ip) + l4_min || !whole(ctx, p, ip, end) ||
        parse_l4(ip + 1, end, p))
        return verdict(XLB_R_DROP_MALFORMED, XDP_DROP);
    return XLB_NEXT_BALANCE;
}

/* ICMPv6 to a VIP address (no extension headers, whole packet in the first
 * buffer): echo requests answered, "packet too big" and "destination
 * unreachable" sent to the backend of the flow they quote. */
static __always_inline int icmp6_to_vip(struct xdp_md *ctx, struct parsed *p,
                                        struct ipv6hdr *ip6, void *end)
{
    struct icmp6hdr *icmp = (void *)(ip6 + 1);
    if (p->inner_len < sizeof(*ip6) + sizeof(*icmp) || (void *)ip6 + p->inner_len > end ||
        (void *)(icmp + 1) > end)
        return verdict(XLB_R_DROP_MALFORMED, XDP_DROP);
    if (icmp->icmp6_type == ICMPV6_ECHO_REQUEST)
        return icmp6_echo(ctx, p->l2_len);
    if (icmp->icmp6_type != ICMPV6_PKT_TOOBIG && icmp->icmp6_type != ICMPV6_DEST_UNREACH)
        return verdict(XLB_R_PASS_VIP_OTHER_PROTO, XDP_PASS);
    struct ipv6hdr *q = (void *)(icmp + 1);
    u16 *ports = (void *)(q + 1);
    if ((void *)(ports + 2) > end || q->version != 6)
        return verdict(XLB_R_DROP_MALFORMED, XDP_DROP);
    if (q->nexthdr != IPPROTO_TCP && q->nexthdr != IPPROTO_UDP)
        return verdict(XLB_R_PASS_VIP_OTHER_PROTO, XDP_PASS);
    __builtin_memcpy(p->flow.src, &q->daddr, 16);
    __builtin_memcpy(p->flow.dst, &q->saddr, 16);
    p->flow.sport = ports[1];
    p->flow.dport = ports[0];
    p->flow.proto = q->nexthdr;
    return XLB_NEXT_ICMP_ERROR;
}

static __always_inline int process_v6(struct xdp_md *ctx, struct parsed *p,
                                      const struct xlb_config *cfg)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ipv6hdr *ip6 = ipv6_hdr(data, end, p->l2_len);
    if (!ip6)
        return verdict(XLB_R_DROP_MALFORMED, XDP_DROP);
    p->flow.family = XLB_AF_INET6;
    __builtin_memcpy(p->flow.src, &ip6->saddr, 16);
    __builtin_memcpy(p->flow.dst, &ip6->daddr, 16);
    p->flow.proto = ip6->nexthdr;
    if (in_pool6(cfg, p->flow.dst))  /* as in v4 */
        return reply_v6(p, ip6, end);
    int plain = ip6->nexthdr == IPPROTO_TCP || ip6->nexthdr == IPPROTO_UDP;  /* as in v4 */
    if (!maybe_vip_addr(cfg, p) || (cfg->vip_filter && !plain && !is_vip_addr(p)))
        return verdict(XLB_R_PASS_NOT_VIP, XDP_PASS);
    p->unconfirmed = plain && cfg->vip_filter;
    u8 nh = ip6->nexthdr;
    p->inner_len = sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
    p->tos = ipv6_tclass(ip6);
    if (nh != IPPROTO_TCP && nh != IPPROTO_UDP) {
        if (ipv6_is_ext(nh)) {  /* like IPv4: fragments first, then options */
            int ext = ipv6_ext(ip6, end);
            if (ext == IPV6_EXT_FRAGMENT)
                return verdict(XLB_R_DROP_FRAGMENT, XDP_DROP);
            if (ext == IPV6_EXT_TRUNCATED)
                return verdict(XLB_R_DROP_MALFORMED, XDP_DROP);
            return verdict(XLB_R_DROP_IP_OPTIONS, XDP_DROP);
        }
        if (nh == IPPROTO_ICMPV6)
            return icmp6_to_vip(ctx, p, ip6, end);
        return verdict(XLB_R_PASS_VIP_OTHER_PROTO, XDP_PASS);
    }
    u32 l4_min = nh == IPPROTO_TCP ? sizeof(struct tcphdr) : sizeof(struct udphdr);
    if (p->inner_len < sizeof(*ip6) + l4_min || !whole(ctx, p, ip6, end) ||
        parse_l4(ip6 + 1, end, p))
        return verdict(XLB_R_DROP_MALFORMED, XDP_DROP);
    return XLB_NEXT_BALANCE;
}

/* The slot of VIP key k in a bank of the VIP index (xlb/dataplane/vipindex.py: slots()). */
static __always_inline u32 vip_index_slot(const struct xlb_vip_key *k, u32 salt)
{
    const u32 *w = (const u32 *)k;
    u32 h = w[0] ^ w[1] ^ w[2] ^ w[3] ^ w[4] ^ (salt * 0x85EBCA6Bu);
    h *= 0x9E3779B1u;
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    return h >> 24;  /* XLB_VIP_INDEX_SLOTS = 256 */
}

/* The VIP of key k, copied to *out: from the VIP index when ctl has one (every VIP key is
 * there, so a key not found is no VIP), else from `vips`. A copy, so what follows sees one
 * kind of pointer whichever map answered (the verifier walks it once). */
static __always_inline int find_vip(const struct xlb_config *cfg, struct xlb_vip_key *k,
                                    struct xlb_vip_meta *out)
{
    u32 ix = cfg->vip_index;
    if (ix) {
        u32 i = ((ix >> 15) & 1) * XLB_VIP_INDEX_SLOTS + vip_index_slot(k, ix & 0x7FFF);
        struct xlb_vip_slot *s = vip_index.lookup(&i);
        if (!s)
            return 0;
        const u32 *a = (const u32 *)k, *b = (const u32 *)&s->key;
        if ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]))
            return 0;
        *out = s->meta;
        return 1;
    }
    struct xlb_vip_meta *m = vips.lookup(k);
    if (!m)
        return 0;
    *out = *m;
    return 1;
}

/* Parse (per family), then take the next step: each step is called here once, for
 * both families (see XLB_NEXT_BALANCE). */
static __always_inline int process(struct xdp_md *ctx, struct parsed *p,
                                   const struct xlb_config *cfg, u64 bytes)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    u16 proto;
    if (parse_l2(data, end, &p->l2_len, &proto))
        return verdict(XLB_R_DROP_MALFORMED, XDP_DROP);
    int next;
    if (proto == bpf_htons(ETH_P_IP))
        next = process_v4(ctx, p, cfg);
    else if (proto == bpf_htons(ETH_P_IPV6))
        next = process_v6(ctx, p, cfg);
    else
        return verdict(XLB_R_PASS_NOT_IP, XDP_PASS);
    if (next >= 0) {
        /* a TCP/UDP packet to a filter's "maybe" is a verdict (malformed) only for a VIP */
        if (p->unconfirmed && !is_vip_addr(p))
            return verdict(XLB_R_PASS_NOT_VIP, XDP_PASS);
        return next;
    }
    struct xlb_vip_meta vip = {};
    int found = 0;
    if (next != XLB_NEXT_REPLY) {
        struct xlb_vip_key k = {};
        __builtin_memcpy(k.addr, p->flow.dst, sizeof(k.addr));
        k.port = p->flow.dport;
        k.proto = p->flow.proto;
        k.family = p->flow.family;
        found = find_vip(cfg, &k, &vip);  /* the port's VIP, else the address's any-port VIP */
        if (!found) {
            if (p->unconfirmed && !is_vip_addr(p))  /* only a filter's "maybe" */
                return verdict(XLB_R_PASS_NOT_VIP, XDP_PASS);
            k.port = 0;
            found = find_vip(cfg, &k, &vip);
        }
    }
    p->unconfirmed = 0;  /* settled; one value for the verifier's states from here on */
    if (next == XLB_NEXT_REPLY)
        return snat_reply(ctx, p, cfg, bytes);
    if (!found)
        return verdict(XLB_R_PASS_VIP_NO_SERVICE, XDP_PASS);
    if (next == XLB_NEXT_ICMP_ERROR)
        return balance_icmp_error(ctx, p, &vip, cfg, bytes);
    return balance(ctx, p, &vip, cfg, bytes);
}

/* Is addr (4 words) in the prefix net/mask (net stored masked)? */
static __always_inline int in_prefix(const u32 *addr, const u32 *net, const u32 *mask)
{
    return !(((addr[0] & mask[0]) ^ net[0]) | ((addr[1] & mask[1]) ^ net[1]) |
             ((addr[2] & mask[2]) ^ net[2]) | ((addr[3] & mask[3]) ^ net[3]));
}

/* Does the packet match every field the trace filter names? */
static __always_inline int trace_match(const struct xlb_trace_config *t, const struct parsed *p)
{
    u32 f = t->fields;
    if (!f)
        return 1;
    const struct xlb_flow_key *fl = &p->flow;
    if ((f & XLB_TF_PROTO) && fl->proto != t->proto)
        return 0;
    if ((f & (XLB_TF_SRC | XLB_TF_DST | XLB_TF_HOST)) && fl->family != t->family)
        return 0;
    if ((f & XLB_TF_SRC) && !in_prefix(fl->src, t->src, t->src_mask))
        return 0;
    if ((f & XLB_TF_DST) && !in_prefix(fl->dst, t->dst, t->dst_mask))
        return 0;
    if ((f & XLB_TF_HOST) && !in_prefix(fl->src, t->host, t->host_mask) &&
        !in_prefix(fl->dst, t->host, t->host_mask))
        return 0;
    if ((f & XLB_TF_SPORT) && fl->sport != t->sport)
        return 0;
    if ((f & XLB_TF_DPORT) && fl->dport != t->dport)
        return 0;
    if ((f & XLB_TF_PORT) && fl->sport != t->port && fl->dport != t->port)
        return 0;
    if ((f & XLB_TF_VIP) && p->vip_id != t->vip_id)
        return 0;
    if ((f & XLB_TF_BACKEND) && p->backend_id != t->backend_id)
        return 0;
    return 1;
}

/* Emit the packet's trace event if it matches the filter and the sample
 * (tracing is on). A full ring buffer counts the event lost, never silently. */
static __always_inline void trace(struct xdp_md *ctx, const struct parsed *p,
                                  const struct xlb_config *cfg, int v, u64 bytes)
{
    const struct xlb_trace_config *t = &cfg->trace;
    if (!trace_match(t, p))
        return;
    u32 sample = t->sample;
    if (sample > 1 && bpf_get_prandom_u32() % sample)
        return;
    u32 zero = 0;
    struct xlb_trace_stats *st = trace_stats.lookup(&zero);
    struct xlb_trace_event *e = trace_events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        if (st)
            st->lost++;
        return;
    }
    u32 reason = VERDICT_REASON(v);
    e->time_ns = bpf_ktime_get_ns();
    e->cpu = bpf_get_smp_processor_id();
    e->queue = ctx->rx_queue_index;
    e->ifindex = ctx->ingress_ifindex;
    e->vip_id = p->vip_id;
    e->backend_id = p->backend_id;
    e->hash = p->hash;
    __builtin_memcpy(&e->flow, &p->flow, sizeof(e->flow));
    __builtin_memset(e->outer_src, 0, sizeof(e->outer_src));
    e->outer_family = 0;
    if (reason >= XLB_R_TX_ENCAP && reason <= XLB_R_TX_ENCAP_ICMP_ERROR &&
        VERDICT_ACTION(v) == XDP_TX) {
        u32 id = p->backend_id;
        struct xlb_backend *be = backends.lookup(&id);
        if (be && be->family == XLB_AF_INET) {
            e->outer_family = XLB_AF_INET;
            e->outer_src[0] = outer_src4(cfg, p->hash);
        } else if (be) {
            e->outer_family = XLB_AF_INET6;
            outer_src6(cfg, p->hash, e->outer_src);
        }
    }
    __builtin_memset(e->snat_addr, 0, sizeof(e->snat_addr));
    e->snat_port = 0;
    e->mode = p->mode;
    e->pad = 0;
    e->pad2 = 0;
    if ((reason == XLB_R_TX_SNAT || reason == XLB_R_TX_SNAT_REPLY) &&
        VERDICT_ACTION(v) == XDP_TX) {  /* the translation, from the flow's entry */
        struct xlb_flow_key f = p->flow;
        struct xlb_conn *c = conns.lookup(&f);
        if (c && c->mode == XLB_MODE_SNAT) {
            __builtin_memcpy(e->snat_addr, c->snat_addr, sizeof(e->snat_addr));
            e->snat_port = c->snat_port;
        }
    }
    e->path = p->path;
    e->action = VERDICT_ACTION(v);
    e->reason = reason;
    e->len = bytes;
    trace_events.ringbuf_submit(e, 0);
    if (st)
        st->written++;
}

int xlb_main(struct xdp_md *ctx)
{
    u64 bytes = ctx->data_end - ctx->data;
    u32 queue = ctx->rx_queue_index;
    u32 zero = 0;
    struct xlb_config *cfg = ctl.lookup(&zero);
    if (!cfg)  /* an array's only entry is always there; the verifier wants the check */
        return XDP_ABORTED;
    struct parsed p = PARSED_INIT;
    int v = process(ctx, &p, cfg, bytes);
    int action = VERDICT_ACTION(v);
    u32 reason = VERDICT_REASON(v);
    struct xlb_traffic *t = reason_stats.lookup(&reason);
    if (t) {
        t->packets++;
        t->bytes += bytes;
    }
    if (queue >= XLB_MAX_QUEUES)
        queue = XLB_MAX_QUEUES - 1;
    struct xlb_queue_stats *qs = queue_stats.lookup(&queue);
    if (qs) {
        qs->packets++;
        qs->bytes += bytes;
        if (action >= 0 && action < XLB_NUM_ACTIONS)
            qs->actions[action]++;
    }
    if (__builtin_expect(cfg->trace.mode != XLB_TRACE_OFF, 0))
        trace(ctx, &p, cfg, v, bytes);
    return action;
}
