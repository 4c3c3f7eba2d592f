/* ICMP answers of the load balancer: "fragmentation needed" (IPv4) and
 * "packet too big" (ICMPv6) back to the sender when a packet would exceed the
 * MTU once encapsulated, and echo replies to pings of a VIP address.
 * reply_frame makes room and turns the frame around (VLAN tag kept);
 * icmp4_too_big / icmp6_too_big write the reply; icmp4_echo / icmp6_echo turn
 * an echo request into its reply in place. Included by xlb.c.
 *
 * Needs verdict(u32 reason, int action) (xlb.c: the program's return value,
 * counted once in xlb_main): the includer defines it before including this
 * header.
 */
#ifndef XLB_ICMP_H
#define XLB_ICMP_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/icmp.h>
#include <uapi/linux/icmpv6.h>
#include "xlb_shared.h"
#include "parse.h"
#include "csum.h"
#include "encap.h"  /* write_l2 */

/* The common start of both ICMP answers: room for the new headers in front,
 * the frame cut to l2 + grow + quote bytes, and an L2 header back to the
 * sender. Returns XLB_R_MAX on success, else the reason to drop. The frame may
 * be larger than one buffer (a multi-buffer frame): cutting it drops the rest. */
static __always_inline u32 reply_frame(struct xdp_md *ctx, u32 l2, u32 grow, u32 quote,
                                       u16 ethertype)
{
    /* callers have checked l2 <= MAX_L2_LEN (the verifier needs that bound) */
    if (bpf_xdp_adjust_head(ctx, -(int)grow))
        return XLB_R_DROP_ADJUST_FAILED;
    int tail = (int)(l2 + grow + quote) - (int)bpf_xdp_get_buff_len(ctx);
    if (tail < 0 && bpf_xdp_adjust_tail(ctx, tail))
        return XLB_R_DROP_ADJUST_FAILED;
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    if (write_l2(data, end, grow, l2, 0, ethertype))
        return XLB_R_DROP_MALFORMED;
    return XLB_R_MAX;
}

/* Answer "fragmentation needed" (v4) / "packet too big" (v6) to the sender:
 * the reply carries the original IP header and 8 bytes of its payload. l2 is
 * the frame's L2 header length (parse_l2), mtu the largest IP packet that fits. */
static __always_inline int icmp4_too_big(struct xdp_md *ctx, u32 l2, u32 mtu)
{
    const u32 grow = sizeof(struct iphdr) + sizeof(struct icmphdr);
    const u32 quote = sizeof(struct iphdr) + 8;
    if (l2 > MAX_L2_LEN)
        return verdict(XLB_R_DROP_MALFORMED, XDP_DROP);
    u32 fail = reply_frame(ctx, l2, grow, quote, bpf_htons(ETH_P_IP));
    if (fail != XLB_R_MAX)
        return verdict(fail, XDP_DROP);
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct iphdr *ip = data + l2;
    struct icmphdr *icmp = (void *)(ip + 1);
    struct iphdr *orig = (void *)(icmp + 1);
    if ((void *)orig + quote > end)
        return verdict(XLB_R_DROP_MALFORMED, XDP_DROP);
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
    return verdict(XLB_R_TX_ICMP_TOO_BIG, XDP_TX);
}

static __always_inline int icmp6_too_big(struct xdp_md *ctx, u32 l2, u32 mtu)
{
    const u32 grow = sizeof(struct ipv6hdr) + sizeof(struct icmp6hdr);
    const u32 quote = sizeof(struct ipv6hdr) + 8;
    if (l2 > MAX_L2_LEN)
        return verdict(XLB_R_DROP_MALFORMED, XDP_DROP);
    u32 fail = reply_frame(ctx, l2, grow, quote, bpf_htons(ETH_P_IPV6));
    if (fail != XLB_R_MAX)
        return verdict(fail, XDP_DROP);
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ipv6hdr *ip6 = data + l2;
    struct icmp6hdr *icmp = (void *)(ip6 + 1);
    struct ipv6hdr *orig = (void *)(icmp + 1);
    if ((void *)orig + quote > end)
        return verdict(XLB_R_DROP_MALFORMED, XDP_DROP);
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
    return verdict(XLB_R_TX_ICMP_TOO_BIG, XDP_TX);
}

/* Back to the sender in place: swap the MACs (a VLAN tag stays where it is).
 * Returns -1 if the frame is shorter than an Ethernet header. */
static __always_inline int swap_macs(void *data, void *end)
{
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return -1;
    u8 mac[ETH_ALEN];
    __builtin_memcpy(mac, eth->h_source, ETH_ALEN);
    __builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
    __builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
    return 0;
}

/* Answer an ICMP echo request (to a VIP address) with its echo reply: the same
 * frame turned around, addresses swapped, type changed (checksum updated for
 * that word only), TTL 64. The caller has checked the whole packet is there
 * and the IPv4 header has no options. */
static __always_inline int icmp4_echo(struct xdp_md *ctx, u32 l2)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    if (l2 > MAX_L2_LEN)
        return verdict(XLB_R_DROP_MALFORMED, XDP_DROP);
    struct iphdr *ip = data + l2;
    struct icmphdr *icmp = (void *)(ip + 1);
    if ((void *)(icmp + 1) > end || swap_macs(data, end))
        return verdict(XLB_R_DROP_MALFORMED, XDP_DROP);
    u32 addr = ip->saddr;
    ip->saddr = ip->daddr;
    ip->daddr = addr;
    ip->ttl = 64;
    ip->check = 0;
    ip->check = ipv4_csum(ip);
    u16 old = *(u16 *)icmp;  /* type and code */
    icmp->type = ICMP_ECHOREPLY;
    icmp->checksum = csum_replace16(icmp->checksum, old, *(u16 *)icmp);
    return verdict(XLB_R_TX_ICMP_ECHO, XDP_TX);
}

/* The ICMPv6 counterpart: the pseudo header's sum does not change when the
 * addresses swap, so only the type word updates the checksum. */
static __always_inline int icmp6_echo(struct xdp_md *ctx, u32 l2)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    if (l2 > MAX_L2_LEN)
        return verdict(XLB_R_DROP_MALFORMED, XDP_DROP);
    struct ipv6hdr *ip6 = data + l2;
    struct icmp6hdr *icmp = (void *)(ip6 + 1);
    if ((void *)(icmp + 1) > end || swap_macs(data, end))
        return verdict(XLB_R_DROP_MALFORMED, XDP_DROP);
    struct in6_addr addr = ip6->saddr;
    ip6->saddr = ip6->daddr;
    ip6->daddr = addr;
    ip6->hop_limit = 64;
    u16 old = *(u16 *)icmp;
    icmp->icmp6_type = ICMPV6_ECHO_REPLY;
    icmp->icmp6_cksum = csum_replace16(icmp->icmp6_cksum, old, *(u16 *)icmp);
    return verdict(XLB_R_TX_ICMP_ECHO, XDP_TX);
}

#endif /* XLB_ICMP_H */
