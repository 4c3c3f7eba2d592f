/* The load balancer's way out: write_l2 (a new Ethernet header, VLAN tag
 * kept, at the new start of a frame that grew in front) and encapsulate
 * (IPv4 or IPv6 outer header pushed in front of the client's IP packet, the
 * four IP-in-IP combinations), including the XLB_BENCH_RESTORE block of the
 * benchmark build. Included by xlb.c, and by icmp.h for write_l2.
 *
 * Needs verdict(u32 reason, int action) (xlb.c: the program's return value,
 * counted once in xlb_main): the includer defines it before including this
 * header. outer_src4/outer_src6 are also what a trace event reports.
 */
#ifndef XLB_ENCAP_H
#define XLB_ENCAP_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include "xlb_shared.h"
#include "parse.h"
#include "csum.h"

/* Write a new Ethernet header (and the VLAN tag, if the frame had one) at
 * the new start of the frame; the old one now sits `shift` bytes further on.
 * The new source MAC is the old destination; the new destination is dst_mac,
 * or the old source when dst_mac is 0 (back to the sender). */
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

/* The outer IPv4 source of a flow with hash `hash`: host bits from the hash. */
static __always_inline u32 outer_src4(const struct xlb_config *cfg, u32 hash)
{
    return cfg->src4_net | (hash & cfg->src4_mask);
}

/* The outer IPv6 source of a flow with hash `hash`, into w[4]. */
static __always_inline void outer_src6(const struct xlb_config *cfg, u32 hash, u32 *w)
{
    u32 h2 = hash * 0x9E3779B1u;
    w[0] = cfg->src6_net[0] | (h2 & cfg->src6_mask[0]);
    w[1] = cfg->src6_net[1] | (h2 & cfg->src6_mask[1]);
    w[2] = cfg->src6_net[2] | (hash & cfg->src6_mask[2]);
    w[3] = cfg->src6_net[3] | (hash & cfg->src6_mask[3]);
}

/* Push an outer IPv4 or IPv6 header in front of the original IP packet and send it,
 * counted under `reason` (how the backend was chosen). */
static __always_inline int encapsulate(struct xdp_md *ctx, struct parsed *p,
                                       const struct xlb_backend *be,
                                       const struct xlb_config *cfg, u32 hash, u32 reason)
{
    u8 inner_proto = p->flow.family == XLB_AF_INET ? IPPROTO_IPIP : IPPROTO_IPV6;
    u32 outer = be->family == XLB_AF_INET ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);
    u16 ethertype = be->family == XLB_AF_INET ? bpf_htons(ETH_P_IP) : bpf_htons(ETH_P_IPV6);
    u32 l2 = p->l2_len;
    if (l2 > MAX_L2_LEN)
        return verdict(XLB_R_DROP_MALFORMED, XDP_DROP);
    if (bpf_xdp_adjust_head(ctx, -(int)outer))
        return verdict(XLB_R_DROP_ADJUST_FAILED, XDP_DROP);
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    if (write_l2(data, end, outer, l2, cfg->has_nexthop_mac ? cfg->nexthop_mac : 0,
                 ethertype))
        return verdict(XLB_R_DROP_MALFORMED, XDP_DROP);
    if (be->family == XLB_AF_INET) {
        struct iphdr *ip = data + l2;
        if ((void *)(ip + 1) > end)
            return verdict(XLB_R_DROP_MALFORMED, XDP_DROP);
        ip->version = 4;
        ip->ihl = 5;
        ip->tos = p->tos;
        ip->tot_len = bpf_htons(p->inner_len + sizeof(*ip));
        ip->id = 0;
        ip->frag_off = 0;
        ip->ttl = 64;
        ip->protocol = inner_proto;
        ip->saddr = outer_src4(cfg, hash);
        ip->daddr = be->addr[0];
        ip->check = 0;
        ip->check = ipv4_csum(ip);
    } else {
        struct ipv6hdr *ip6 = data + l2;
        if ((void *)(ip6 + 1) > end)
            return verdict(XLB_R_DROP_MALFORMED, XDP_DROP);
        /* version 6, traffic class from the inner packet, flow label from the hash */
        u32 vtf = (6u << 28) | ((u32)p->tos << 20) | (hash & 0xFFFFF);
        *(u32 *)ip6 = bpf_htonl(vtf);
        ip6->payload_len = bpf_htons(p->inner_len);
        ip6->nexthdr = inner_proto;
        ip6->hop_limit = 64;
        outer_src6(cfg, hash, ip6->saddr.in6_u.u6_addr32);
        __builtin_memcpy(&ip6->daddr, be->addr, 16);
    }
#ifdef XLB_BENCH_RESTORE
    /* Benchmark builds only (bench/dataplane.py): BPF_PROG_TEST_RUN with
     * repeat hands the *modified* frame to the next run, so undo the push and
     * rebuild the original Ethernet header (untagged, no next-hop MAC). */
    struct ethhdr *e = data;
    if ((void *)(e + 1) > end)
        return verdict(XLB_R_DROP_ADJUST_FAILED, XDP_ABORTED);
    u8 orig_src[ETH_ALEN], orig_dst[ETH_ALEN];
    __builtin_memcpy(orig_src, e->h_dest, ETH_ALEN);
    __builtin_memcpy(orig_dst, e->h_source, ETH_ALEN);
    if (bpf_xdp_adjust_head(ctx, (int)outer))
        return verdict(XLB_R_DROP_ADJUST_FAILED, XDP_ABORTED);
    data = (void *)(long)ctx->data;
    end = (void *)(long)ctx->data_end;
    e = data;
    if ((void *)(e + 1) > end)
        return verdict(XLB_R_DROP_ADJUST_FAILED, XDP_ABORTED);
    __builtin_memcpy(e->h_dest, orig_dst, ETH_ALEN);
    __builtin_memcpy(e->h_source, orig_src, ETH_ALEN);
    e->h_proto = p->flow.family == XLB_AF_INET ? bpf_htons(ETH_P_IP) : bpf_htons(ETH_P_IPV6);
#ifdef XLB_BENCH_NEW_FLOWS
    /* the next repetition is a new flow: the client's port moves on (and its address's
     * last 16 bits, when the port wraps), as in snat.h's restore */
    u16 *port = data + sizeof(*e) + (p->flow.family == XLB_AF_INET ? sizeof(struct iphdr)
                                                                    : sizeof(struct ipv6hdr));
    u16 *host = data + sizeof(*e) + (p->flow.family == XLB_AF_INET ? 14 : 22);
    if ((void *)(port + 1) > end || (void *)(host + 1) > end)
        return verdict(XLB_R_DROP_ADJUST_FAILED, XDP_ABORTED);
    u16 next = bpf_ntohs(*port) + 1;
    *port = bpf_htons(next);
    if (!next)
        *host = bpf_htons(bpf_ntohs(*host) + 1);
#endif
#endif
    return verdict(reason, XDP_TX);
}

#endif /* XLB_ENCAP_H */
