/* Backend-side decapsulation for xlb's IP-in-IP DSR, as XDP: hosts without
 * an ipip module (the lab's kernel has none) get the inner packet back.
 * Outer IPv4 proto 4/41 or IPv6 next header 4/41 (on a backend link, only the LB
 * sends those) is
 * stripped: the Ethernet header moves forward over the outer IP header and
 * its ethertype becomes the inner family's. Everything else passes as is.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>

static __always_inline int strip(struct xdp_md *ctx, u32 outer, u8 inner_proto)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return XDP_PASS;
    struct ethhdr copy = *eth;
    copy.h_proto = inner_proto == IPPROTO_IPIP ? bpf_htons(ETH_P_IP) : bpf_htons(ETH_P_IPV6);
    if (bpf_xdp_adjust_head(ctx, (int)outer))
        return XDP_DROP;
    data = (void *)(long)ctx->data;
    end = (void *)(long)ctx->data_end;
    eth = data;
    if ((void *)(eth + 1) > end)
        return XDP_DROP;
    *eth = copy;
    return XDP_PASS;
}

int xlb_decap(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return XDP_PASS;
    if (eth->h_proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = (void *)(eth + 1);
        if ((void *)(ip + 1) > end || ip->ihl != 5)
            return XDP_PASS;
        if (ip->protocol == IPPROTO_IPIP || ip->protocol == IPPROTO_IPV6)
            return strip(ctx, sizeof(*ip), ip->protocol);
    } else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = (void *)(eth + 1);
        if ((void *)(ip6 + 1) > end)
            return XDP_PASS;
        if (ip6->nexthdr == IPPROTO_IPIP || ip6->nexthdr == IPPROTO_IPV6)
            return strip(ctx, sizeof(*ip6), ip6->nexthdr);
    }
    return XDP_PASS;
}
