/* xlb XDP data plane: Katran-style L4 load balancing with Maglev and
 * IP-in-IP direct server return. Compiled by BCC at load time; the loader
 * defines PIN_DIR, RING_SIZE, RING_SLOTS, MAX_VIPS, MAX_BACKENDS, MAX_CONNS.
 *
 * Path of a packet: parse (Ethernet, one 802.1Q tag, IPv4/IPv6, TCP/UDP) ->
 * is the destination a VIP address? (no: XDP_PASS, the host's own traffic)
 * -> fragments/options dropped -> VIP lookup (port, then port 0) ->
 * connection table (TCP SYN always asks Maglev) -> Maglev ring -> encapsulate
 * to the backend (or ICMP too-big) -> XDP_TX. Every packet is counted under
 * exactly one reason, per RX queue and per action.
 */
#include <uapi/linux/bpf.h>
#include "xlb_shared.h"  /* structs and enums mirrored by Python */
#include "parse.h"       /* Ethernet/VLAN, IPv4/IPv6, ports */

#define XLB_NSEC_PER_SEC 1000000000ULL

BPF_TABLE_PINNED("array", u32, struct xlb_meta, meta, 1, PIN_DIR "/meta");
BPF_TABLE_PINNED("array", u32, struct xlb_config, ctl, 1, PIN_DIR "/ctl");
BPF_TABLE_PINNED("hash", struct xlb_vip_key, struct xlb_vip_meta, vips, MAX_VIPS, PIN_DIR "/vips");
BPF_TABLE_PINNED("hash", struct xlb_addr_key, u32, vip_addrs, MAX_VIPS, PIN_DIR "/vip_addrs");
BPF_TABLE_PINNED("array", u32, u32, rings, RING_SLOTS * RING_SIZE, PIN_DIR "/rings");
BPF_TABLE_PINNED("array", u32, struct xlb_backend, backends, MAX_BACKENDS, PIN_DIR "/backends");
BPF_TABLE_PINNED("lru_hash", struct xlb_flow_key, struct xlb_conn, conns, MAX_CONNS,
                 PIN_DIR "/conns", BPF_F_NO_COMMON_LRU);
BPF_TABLE_PINNED("percpu_array", u32, struct xlb_queue_stats, queue_stats, XLB_MAX_QUEUES,
                 PIN_DIR "/queue_stats");
BPF_TABLE_PINNED("percpu_array", u32, struct xlb_traffic, vip_stats, MAX_VIPS,
                 PIN_DIR "/vip_stats");
BPF_TABLE_PINNED("percpu_array", u32, struct xlb_backend_stats, backend_stats, MAX_BACKENDS,
                 PIN_DIR "/backend_stats");
BPF_TABLE_PINNED("percpu_array", u32, struct xlb_traffic, reason_stats, XLB_R_MAX,
                 PIN_DIR "/reason_stats");

static __always_inline int verdict(u32 reason, u64 bytes, int action)
{
    struct xlb_traffic *t = reason_stats.lookup(&reason);
    if (t) {
        t->packets++;
        t->bytes += bytes;
    }
    return action;
}

/* These call verdict(), so they come after it: BCC rewrites map calls such as
 * reason_stats.lookup() in this file only, not in headers. */
#include "encap.h"  /* write_l2, encapsulate */
#include "icmp.h"   /* icmp4_too_big, icmp6_too_big */

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

/* Pick the backend (connection table, else Maglev), count, and send. */
static __always_inline int balance(struct xdp_md *ctx, struct parsed *p,
                                   const struct xlb_vip_meta *vip, u64 bytes)
{
    u32 zero = 0;
    struct xlb_config *cfg = ctl.lookup(&zero);
    if (!cfg)
        return verdict(XLB_R_DROP_NO_BACKEND, bytes, XDP_DROP);
    u32 hash = flow_hash(&p->flow);
    u64 now = bpf_ktime_get_coarse_ns();
    u64 epoch = now >> XLB_ACTIVE_EPOCH_SHIFT;
    u32 backend_id = XLB_NO_BACKEND;
    struct xlb_backend *be = 0;
    int new_conn = 0;
    int touched = 0;  /* the flow's first packet in this epoch: counted as active */

    int syn = p->flow.proto == IPPROTO_TCP && (p->tcp_flags & 0x12) == 0x02;
    if (!syn) {
        struct xlb_conn *c = conns.lookup(&p->flow);
        if (c) {
            backend_id = c->backend_id;
            be = backends.lookup(&backend_id);
            if (be && (be->flags & XLB_BACKEND_VALID)) {
                /* compare with the old last_seen, before it is refreshed; a new
                 * epoch always refreshes it, so the flow counts once per epoch */
                u64 seen = c->last_seen_ns;
                touched = (seen >> XLB_ACTIVE_EPOCH_SHIFT) < epoch;
                if (touched || now - seen > XLB_NSEC_PER_SEC)
                    c->last_seen_ns = now;
            } else {
                be = 0;
            }
        }
    }
    if (!be) {
        u32 idx = vip->ring_slot * RING_SIZE + hash % RING_SIZE;
        u32 *id = rings.lookup(&idx);
        if (!id || *id == XLB_NO_BACKEND)
            return verdict(XLB_R_DROP_NO_BACKEND, bytes, XDP_DROP);
        backend_id = *id;
        be = backends.lookup(&backend_id);
        if (!be || !(be->flags & XLB_BACKEND_VALID))
            return verdict(XLB_R_DROP_NO_BACKEND, bytes, XDP_DROP);
        struct xlb_conn nc = {.backend_id = backend_id, .vip_id = vip->vip_id,
                              .last_seen_ns = now};
        conns.update(&p->flow, &nc);
        new_conn = 1;
        touched = 1;
    }

    u32 vip_id = vip->vip_id;
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

    u32 outer = be->family == XLB_AF_INET ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);
    if (p->inner_len + outer > cfg->mtu) {
        u32 room = cfg->mtu - outer;
        if (p->flow.family == XLB_AF_INET)
            return icmp4_too_big(ctx, p->l2_len, room, bytes);
        return icmp6_too_big(ctx, p->l2_len, room, bytes);
    }
    return encapsulate(ctx, p, be, cfg, hash, bytes);
}

static __always_inline struct xlb_vip_meta *find_vip(struct parsed *p)
{
    struct xlb_vip_key k = {};
    __builtin_memcpy(k.addr, p->flow.dst, sizeof(k.addr));
    k.port = p->flow.dport;
    k.proto = p->flow.proto;
    k.family = p->flow.family;
    struct xlb_vip_meta *v = vips.lookup(&k);
    if (v)
        return v;
    k.port = 0;
    return vips.lookup(&k);
}

static __always_inline int is_vip_addr(struct parsed *p)
{
    struct xlb_addr_key k = {};
    __builtin_memcpy(k.addr, p->flow.dst, sizeof(k.addr));
    k.family = p->flow.family;
    return vip_addrs.lookup(&k) != 0;
}

static __always_inline int process_v4(struct xdp_md *ctx, struct parsed *p, u64 bytes)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct iphdr *ip = ipv4_hdr(data, end, p->l2_len);
    if (!ip)
        return verdict(XLB_R_DROP_MALFORMED, bytes, XDP_DROP);
    p->flow.family = XLB_AF_INET;
    p->flow.src[0] = ip->saddr;
    p->flow.dst[0] = ip->daddr;
    if (!is_vip_addr(p))
        return verdict(XLB_R_PASS_NOT_VIP, bytes, XDP_PASS);
    if (ip->frag_off & bpf_htons(IP_MF_OFFSET))
        return verdict(XLB_R_DROP_FRAGMENT, bytes, XDP_DROP);
    if (ip->ihl != 5)
        return verdict(XLB_R_DROP_IP_OPTIONS, bytes, XDP_DROP);
    if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
        return verdict(XLB_R_PASS_VIP_OTHER_PROTO, bytes, XDP_PASS);
    p->inner_len = bpf_ntohs(ip->tot_len);
    u32 l4_min = ip->protocol == IPPROTO_TCP ? sizeof(struct tcphdr) : sizeof(struct udphdr);
    if (p->inner_len < sizeof(*ip) + l4_min || (void *)ip + p->inner_len > end)
        return verdict(XLB_R_DROP_MALFORMED, bytes, XDP_DROP);
    p->flow.proto = ip->protocol;
    p->tos = ip->tos;
    if (parse_l4(ip + 1, end, p))
        return verdict(XLB_R_DROP_MALFORMED, bytes, XDP_DROP);
    struct xlb_vip_meta *vip = find_vip(p);
    if (!vip)
        return verdict(XLB_R_PASS_VIP_NO_SERVICE, bytes, XDP_PASS);
    return balance(ctx, p, vip, bytes);
}

static __always_inline int process_v6(struct xdp_md *ctx, struct parsed *p, u64 bytes)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ipv6hdr *ip6 = ipv6_hdr(data, end, p->l2_len);
    if (!ip6)
        return verdict(XLB_R_DROP_MALFORMED, bytes, XDP_DROP);
    p->flow.family = XLB_AF_INET6;
    __builtin_memcpy(p->flow.src, &ip6->saddr, 16);
    __builtin_memcpy(p->flow.dst, &ip6->daddr, 16);
    if (!is_vip_addr(p))
        return verdict(XLB_R_PASS_NOT_VIP, bytes, XDP_PASS);
    if (ip6->nexthdr == IPPROTO_FRAGMENT)
        return verdict(XLB_R_DROP_FRAGMENT, bytes, XDP_DROP);
    if (ip6->nexthdr != IPPROTO_TCP && ip6->nexthdr != IPPROTO_UDP)
        return verdict(XLB_R_PASS_VIP_OTHER_PROTO, bytes, XDP_PASS);
    p->inner_len = sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
    u32 l4_min = ip6->nexthdr == IPPROTO_TCP ? sizeof(struct tcphdr) : sizeof(struct udphdr);
    if (p->inner_len < sizeof(*ip6) + l4_min || (void *)ip6 + p->inner_len > end)
        return verdict(XLB_R_DROP_MALFORMED, bytes, XDP_DROP);
    p->flow.proto = ip6->nexthdr;
    p->tos = ipv6_tclass(ip6);
    if (parse_l4(ip6 + 1, end, p))
        return verdict(XLB_R_DROP_MALFORMED, bytes, XDP_DROP);
    struct xlb_vip_meta *vip = find_vip(p);
    if (!vip)
        return verdict(XLB_R_PASS_VIP_NO_SERVICE, bytes, XDP_PASS);
    return balance(ctx, p, vip, bytes);
}

static __always_inline int process(struct xdp_md *ctx, u64 bytes)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct parsed p = {};
    u16 proto;
    if (parse_l2(data, end, &p.l2_len, &proto))
        return verdict(XLB_R_DROP_MALFORMED, bytes, XDP_DROP);
    if (proto == bpf_htons(ETH_P_IP))
        return process_v4(ctx, &p, bytes);
    if (proto == bpf_htons(ETH_P_IPV6))
        return process_v6(ctx, &p, bytes);
    return verdict(XLB_R_PASS_NOT_IP, bytes, XDP_PASS);
}

int xlb_main(struct xdp_md *ctx)
{
    u64 bytes = ctx->data_end - ctx->data;
    u32 queue = ctx->rx_queue_index;
    int action = process(ctx, bytes);
    if (queue >= XLB_MAX_QUEUES)
        queue = XLB_MAX_QUEUES - 1;
    struct xlb_queue_stats *qs = queue_stats.lookup(&queue);
    if (qs) {
        qs->packets++;
        qs->bytes += bytes;
        if (action >= 0 && action < XLB_NUM_ACTIONS)
            qs->actions[action]++;
    }
    return action;
}
