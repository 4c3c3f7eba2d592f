/* Backend-side decapsulation for xlb's IP-in-IP DSR, as XDP: hosts without
 * an ipip module (the lab's kernel has none) get the inner packet back.
 * Outer IPv4 (no options) with protocol 4/41, or outer IPv6 with next header
 * 4/41 (on a backend link, only the LB sends those), is stripped: the L2
 * header, with its 802.1Q/802.1ad tag if the frame has one, moves forward
 * over the outer IP header and its (innermost) ethertype becomes the inner
 * family's. Everything else passes as is. Parses with parse.h, like xlb.c.
 * Compiled by BCC with -I of this directory (xlb/lab/run.py, the tests).
 */
#include <uapi/linux/bpf.h>
#include "parse.h"

/* Drop the `outer` bytes of outer IP header behind an L2 header of l2_len
 * bytes. The L2 header is first written `outer` bytes further on, over the
 * outer IP header (outer, 20 or 40, >= MAX_L2_LEN: the copy does not overlap
 * its source), then the frame start moves there. */
static __always_inline int strip(struct xdp_md *ctx, u32 l2_len, u32 outer, u8 inner_proto)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    u16 ethertype = inner_proto == IPPROTO_IPIP ? bpf_htons(ETH_P_IP) : bpf_htons(ETH_P_IPV6);
    struct ethhdr *oeth = data;
    struct ethhdr *neth = data + outer;
    /* the copy lies within the outer IP header and the inner packet, so these
     * checks cannot fail once parsing passed; the verifier wants them */
    if ((void *)(neth + 1) > end)
        return XDP_PASS;
    if (l2_len == sizeof(struct ethhdr) + sizeof(struct vlan_hdr)) {
        struct vlan_hdr *ov = (void *)(oeth + 1);
        struct vlan_hdr *nv = (void *)(neth + 1);
        if ((void *)(nv + 1) > end)
            return XDP_PASS;
        nv->tci = ov->tci;
        nv->proto = ethertype;
        ethertype = oeth->h_proto;  /* the tag's own type (802.1Q or 802.1ad) stays */
    }
    __builtin_memcpy(neth->h_dest, oeth->h_dest, ETH_ALEN);
    __builtin_memcpy(neth->h_source, oeth->h_source, ETH_ALEN);
    neth->h_proto = ethertype;
    if (bpf_xdp_adjust_head(ctx, (int)outer))
        return XDP_DROP;
    return XDP_PASS;
}

int xlb_decap(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    u32 l2;
    u16 proto;
    if (parse_l2(data, end, &l2, &proto))
        return XDP_PASS;
    if (proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = ipv4_hdr(data, end, l2);
        if (!ip || ip->ihl != 5)
            return XDP_PASS;
        if (ip->protocol == IPPROTO_IPIP || ip->protocol == IPPROTO_IPV6)
            return strip(ctx, l2, sizeof(*ip), ip->protocol);
    } else if (proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = ipv6_hdr(data, end, l2);
        if (!ip6)
            return XDP_PASS;
        if (ip6->nexthdr == IPPROTO_IPIP || ip6->nexthdr == IPPROTO_IPV6)
            return strip(ctx, l2, sizeof(*ip6), ip6->nexthdr);
    }
    return XDP_PASS;
}
