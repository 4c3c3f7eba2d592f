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
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>
#include <uapi/linux/icmp.h>
#include <uapi/linux/icmpv6.h>
#include "xlb_shared.h"

#define IP_MF_OFFSET 0x3FFF  /* more-fragments flag | fragment offset */
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

struct vlan_hdr {
    __be16 tci;
    __be16 proto;
};

#define MAX_L2_LEN 18  /* Ethernet + one VLAN tag */

struct parsed {
    struct xlb_flow_key flow;
    u32 l2_len;       /* Ethernet header, plus 4 with a VLAN tag */
    u32 inner_len;    /* IP packet length from its header (without link padding) */
    u8 tcp_flags;
    u8 tos;
};

static __always_inline int verdict(u32 reason, u64 bytes, int action)
{
    struct xlb_traffic *t = reason_stats.lookup(&reason);
    if (t) {
        t->packets++;
        t->bytes += bytes;
    }
    return action;
}

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

static __always_inline u16 fold_csum(u64 sum)
{
#pragma unroll
    for (int i = 0; i < 4; i++)
        sum = (sum & 0xffff) + (sum >> 16);
    return ~sum;
}

static __always_inline u16 ipv4_csum(struct iphdr *ip)
{
    u16 *w = (u16 *)ip;
    u64 sum = 0;
#pragma unroll
    for (int i = 0; i < (int)(sizeof(*ip) / 2); i++)
        sum += w[i];
    return fold_csum(sum);
}

/* Write a new Ethernet header (and the VLAN tag, if the frame had one) at
 * the new start of the frame; the old one now sits `shift` bytes further on. */
static __always_inline int write_l2(void *data, void *end, u32 shift, u32 l2_len,
                                    const u8 *dst_mac, u16 ethertype)
{
    struct ethhdr *neth = data;
    struct ethhdr *oeth = data + shift;
    if ((void *)(oeth + 1) > end || (void *)(neth + 1) > end)
        return -1;
    u8 src_mac[ETH_ALEN];
    __builtin_memcpy(src_mac, oeth->h_dest, ETH_ALEN);
    if (dst_mac)
        __builtin_memcpy(neth->h_dest, dst_mac, ETH_ALEN);
    else
        __builtin_memcpy(neth->h_dest, oeth->h_source, ETH_ALEN);
    __builtin_memcpy(neth->h_source, src_mac, ETH_ALEN);
    if (l2_len != sizeof(struct ethhdr) + sizeof(struct vlan_hdr)) {
        neth->h_proto = ethertype;
        return 0;
    }
    struct vlan_hdr *nv = (void *)(neth + 1);
    struct vlan_hdr *ov = (void *)(oeth + 1);
    if ((void *)(nv + 1) > end || (void *)(ov + 1) > end)
        return -1;
    neth->h_proto = oeth->h_proto;
    nv->tci = ov->tci;
    nv->proto = ethertype;
    return 0;
}

/* The common start of both ICMP answers: room for the new headers in front,
 * the frame cut to l2 + grow + quote bytes, and an L2 header back to the
 * sender. Returns XLB_R_MAX on success, else the reason to drop. */
static __always_inline u32 reply_frame(struct xdp_md *ctx, u32 l2, u32 grow, u32 quote,
                                       u16 ethertype)
{
    /* callers have checked l2 <= MAX_L2_LEN (the verifier needs that bound) */
    if (bpf_xdp_adjust_head(ctx, -(int)grow))
        return XLB_R_DROP_ADJUST_FAILED;
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    int tail = (int)(l2 + grow + quote) - (int)(end - data);
    if (tail < 0 && bpf_xdp_adjust_tail(ctx, tail))
        return XLB_R_DROP_ADJUST_FAILED;
    data = (void *)(long)ctx->data;
    end = (void *)(long)ctx->data_end;
    if (write_l2(data, end, grow, l2, 0, ethertype))
        return XLB_R_DROP_MALFORMED;
    return XLB_R_MAX;
}

/* Answer "fragmentation needed" (v4) / "packet too big" (v6) to the sender:
 * the reply carries the original IP header and 8 bytes of its payload. */
static __always_inline int icmp4_too_big(struct xdp_md *ctx, struct parsed *p, u32 mtu, u64 bytes)
{
    const u32 grow = sizeof(struct iphdr) + sizeof(struct icmphdr);
    const u32 quote = sizeof(struct iphdr) + 8;
    u32 l2 = p->l2_len;
    if (l2 > MAX_L2_LEN)
        return verdict(XLB_R_DROP_MALFORMED, bytes, XDP_DROP);
    u32 fail = reply_frame(ctx, l2, grow, quote, bpf_htons(ETH_P_IP));
    if (fail != XLB_R_MAX)
        return verdict(fail, bytes, XDP_DROP);
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct iphdr *ip = data + l2;
    struct icmphdr *icmp = (void *)(ip + 1);
    struct iphdr *orig = (void *)(icmp + 1);
    if ((void *)orig + quote > end)
        return verdict(XLB_R_DROP_MALFORMED, bytes, XDP_DROP);
    ip->version = 4;
    ip->ihl = 5;
    ip->tos = 0;
    ip->tot_len = bpf_htons(grow + quote);
    ip->id = 0;
    ip->frag_off = 0;
    ip->ttl = 64;
    ip->protocol = IPPROTO_ICMP;
    ip->saddr = orig->daddr;
    ip->daddr = orig->saddr;
    ip->check = 0;
    ip->check = ipv4_csum(ip);
    icmp->type = ICMP_DEST_UNREACH;
    icmp->code = ICMP_FRAG_NEEDED;
    icmp->un.frag.__unused = 0;
    icmp->un.frag.mtu = bpf_htons(mtu);
    icmp->checksum = 0;
    u64 sum = (u32)bpf_csum_diff(0, 0, (void *)icmp, sizeof(*icmp) + quote, 0);
    icmp->checksum = fold_csum(sum);
    return verdict(XLB_R_TX_ICMP_TOO_BIG, bytes, XDP_TX);
}

static __always_inline int icmp6_too_big(struct xdp_md *ctx, struct parsed *p, u32 mtu, u64 bytes)
{
    const u32 grow = sizeof(struct ipv6hdr) + sizeof(struct icmp6hdr);
    const u32 quote = sizeof(struct ipv6hdr) + 8;
    u32 l2 = p->l2_len;
    if (l2 > MAX_L2_LEN)
        return verdict(XLB_R_DROP_MALFORMED, bytes, XDP_DROP);
    u32 fail = reply_frame(ctx, l2, grow, quote, bpf_htons(ETH_P_IPV6));
    if (fail != XLB_R_MAX)
        return verdict(fail, bytes, XDP_DROP);
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ipv6hdr *ip6 = data + l2;
    struct icmp6hdr *icmp = (void *)(ip6 + 1);
    struct ipv6hdr *orig = (void *)(icmp + 1);
    if ((void *)orig + quote > end)
        return verdict(XLB_R_DROP_MALFORMED, bytes, XDP_DROP);
    __builtin_memset(ip6, 0, 4);
    ip6->version = 6;
    ip6->payload_len = bpf_htons(sizeof(*icmp) + quote);
    ip6->nexthdr = IPPROTO_ICMPV6;
    ip6->hop_limit = 64;
    ip6->saddr = orig->daddr;
    ip6->daddr = orig->saddr;
    icmp->icmp6_type = ICMPV6_PKT_TOOBIG;
    icmp->icmp6_code = 0;
    icmp->icmp6_mtu = bpf_htonl(mtu);
    icmp->icmp6_cksum = 0;
    /* pseudo header (addresses, length, next header) + ICMPv6 message */
    u64 sum = (u32)bpf_csum_diff(0, 0, (void *)&ip6->saddr, 32, 0);
    sum += bpf_htonl(sizeof(*icmp) + quote);
    sum += bpf_htonl(IPPROTO_ICMPV6);
    sum += (u32)bpf_csum_diff(0, 0, (void *)icmp, sizeof(*icmp) + quote, 0);
    icmp->icmp6_cksum = fold_csum(sum);
    return verdict(XLB_R_TX_ICMP_TOO_BIG, bytes, XDP_TX);
}

/* Push an outer IPv4 or IPv6 header in front of the original IP packet. */
static __always_inline int encapsulate(struct xdp_md *ctx, struct parsed *p,
                                       const struct xlb_backend *be,
                                       const struct xlb_config *cfg, u32 hash, u64 bytes)
{
    u8 inner_proto = p->flow.family == XLB_AF_INET ? IPPROTO_IPIP : IPPROTO_IPV6;
    u32 outer = be->family == XLB_AF_INET ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);
    u16 ethertype = be->family == XLB_AF_INET ? bpf_htons(ETH_P_IP) : bpf_htons(ETH_P_IPV6);
    u32 l2 = p->l2_len;
    if (l2 > MAX_L2_LEN)
        return verdict(XLB_R_DROP_MALFORMED, bytes, XDP_DROP);
    if (bpf_xdp_adjust_head(ctx, -(int)outer))
        return verdict(XLB_R_DROP_ADJUST_FAILED, bytes, XDP_DROP);
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    if (write_l2(data, end, outer, l2, cfg->has_nexthop_mac ? cfg->nexthop_mac : 0,
                 ethertype))
        return verdict(XLB_R_DROP_MALFORMED, bytes, XDP_DROP);
    if (be->family == XLB_AF_INET) {
        struct iphdr *ip = data + l2;
        if ((void *)(ip + 1) > end)
            return verdict(XLB_R_DROP_MALFORMED, bytes, XDP_DROP);
        ip->version = 4;
        ip->ihl = 5;
        ip->tos = p->tos;
        ip->tot_len = bpf_htons(p->inner_len + sizeof(*ip));
        ip->id = 0;
        ip->frag_off = 0;
        ip->ttl = 64;
        ip->protocol = inner_proto;
        ip->saddr = cfg->src4_net | (hash & cfg->src4_mask);
        ip->daddr = be->addr[0];
        ip->check = 0;
        ip->check = ipv4_csum(ip);
    } else {
        struct ipv6hdr *ip6 = data + l2;
        if ((void *)(ip6 + 1) > end)
            return verdict(XLB_R_DROP_MALFORMED, bytes, XDP_DROP);
        /* version 6, traffic class from the inner packet, flow label from the hash */
        u32 vtf = (6u << 28) | ((u32)p->tos << 20) | (hash & 0xFFFFF);
        *(u32 *)ip6 = bpf_htonl(vtf);
        ip6->payload_len = bpf_htons(p->inner_len);
        ip6->nexthdr = inner_proto;
        ip6->hop_limit = 64;
        u32 h2 = hash * 0x9E3779B1u;
        ip6->saddr.in6_u.u6_addr32[0] = cfg->src6_net[0] | (h2 & cfg->src6_mask[0]);
        ip6->saddr.in6_u.u6_addr32[1] = cfg->src6_net[1] | (h2 & cfg->src6_mask[1]);
        ip6->saddr.in6_u.u6_addr32[2] = cfg->src6_net[2] | (hash & cfg->src6_mask[2]);
        ip6->saddr.in6_u.u6_addr32[3] = cfg->src6_net[3] | (hash & cfg->src6_mask[3]);
        __builtin_memcpy(&ip6->daddr, be->addr, 16);
    }
#ifdef XLB_BENCH_RESTORE
    /* Benchmark builds only (bench/dataplane.py): BPF_PROG_TEST_RUN with
     * repeat hands the *modified* frame to the next run, so undo the push and
     * rebuild the original Ethernet header (untagged, no next-hop MAC). */
    struct ethhdr *e = data;
    if ((void *)(e + 1) > end)
        return XDP_ABORTED;
    u8 orig_src[ETH_ALEN], orig_dst[ETH_ALEN];
    __builtin_memcpy(orig_src, e->h_dest, ETH_ALEN);
    __builtin_memcpy(orig_dst, e->h_source, ETH_ALEN);
    if (bpf_xdp_adjust_head(ctx, (int)outer))
        return XDP_ABORTED;
    data = (void *)(long)ctx->data;
    end = (void *)(long)ctx->data_end;
    e = data;
    if ((void *)(e + 1) > end)
        return XDP_ABORTED;
    __builtin_memcpy(e->h_dest, orig_dst, ETH_ALEN);
    __builtin_memcpy(e->h_source, orig_src, ETH_ALEN);
    e->h_proto = p->flow.family == XLB_AF_INET ? bpf_htons(ETH_P_IP) : bpf_htons(ETH_P_IPV6);
#endif
    return verdict(XLB_R_TX_ENCAP, bytes, XDP_TX);
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
            return icmp4_too_big(ctx, p, room, bytes);
        return icmp6_too_big(ctx, p, room, bytes);
    }
    return encapsulate(ctx, p, be, cfg, hash, bytes);
}

static __always_inline int parse_l4(void *l4, void *end, struct parsed *p, u64 bytes)
{
    if (p->flow.proto == IPPROTO_TCP) {
        struct tcphdr *th = l4;
        if ((void *)(th + 1) > end)
            return -1;
        p->flow.sport = th->source;
        p->flow.dport = th->dest;
        p->tcp_flags = ((u8 *)th)[13];
    } else {
        struct udphdr *uh = l4;
        if ((void *)(uh + 1) > end)
            return -1;
        p->flow.sport = uh->source;
        p->flow.dport = uh->dest;
    }
    return 0;
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
    u32 l2 = p->l2_len;
    if (l2 > MAX_L2_LEN)
        return verdict(XLB_R_DROP_MALFORMED, bytes, XDP_DROP);
    struct iphdr *ip = data + l2;
    if ((void *)(ip + 1) > end || ip->version != 4 || ip->ihl < 5)
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
    if (parse_l4(ip + 1, end, p, bytes))
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
    u32 l2 = p->l2_len;
    if (l2 > MAX_L2_LEN)
        return verdict(XLB_R_DROP_MALFORMED, bytes, XDP_DROP);
    struct ipv6hdr *ip6 = data + l2;
    if ((void *)(ip6 + 1) > end || ip6->version != 6)
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
    p->tos = (bpf_ntohl(*(u32 *)ip6) >> 20) & 0xFF;
    if (parse_l4(ip6 + 1, end, p, bytes))
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
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return verdict(XLB_R_DROP_MALFORMED, bytes, XDP_DROP);
    struct parsed p = {};
    p.l2_len = sizeof(*eth);
    u16 proto = eth->h_proto;
    if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
        struct vlan_hdr *vh = (void *)(eth + 1);
        if ((void *)(vh + 1) > end)
            return verdict(XLB_R_DROP_MALFORMED, bytes, XDP_DROP);
        proto = vh->proto;
        p.l2_len += sizeof(*vh);
    }
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
