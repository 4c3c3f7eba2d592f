/* Packet parsing shared by every XDP program of xlb: the Ethernet header with
 * at most one 802.1Q/802.1ad tag, access to the IPv4/IPv6 header behind it,
 * and the TCP/UDP ports. Included by xlb.c (the load balancer) and decap.c
 * (the backends' decapsulation); probe and SNAT code should parse with it too,
 * so VLAN handling and bounds checks live in one place.
 *
 * Only reads the packet and needs no map: any BCC program can include it
 * (BCC rewrites map calls such as table.lookup() in the main file only).
 * Every function is __always_inline and checks its bounds against data_end.
 */
#ifndef XLB_PARSE_H
#define XLB_PARSE_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>
#include "xlb_shared.h"

#define IP_MF_OFFSET 0x3FFF  /* IPv4 frag_off: more-fragments flag | fragment offset */
#define IP_FRAG_OFFSET 0x1FFF  /* IPv4 frag_off: fragment offset (non-zero: no L4 header) */
#define IPV6_MAX_EXT 6  /* extension headers walked before giving up (RFC 8200 order: 4) */

struct vlan_hdr {
    __be16 tci;
    __be16 proto;
};

#define MAX_L2_LEN 18  /* Ethernet + one VLAN tag */

/* What the load balancer knows of a client packet once parsed, and what it
 * decided (for a trace event). Start it as PARSED_INIT. */
struct parsed {
    struct xlb_flow_key flow;
    u32 l2_len;       /* Ethernet header, plus 4 with a VLAN tag */
    u32 inner_len;    /* IP packet length from its header (without link padding) */
    u8 tcp_flags;
    u8 tos;
    u8 path;          /* enum xlb_path: how the backend was chosen */
    u8 mode;          /* XLB_MODE_* of the flow (a trace event reports it) */
    u8 unconfirmed;   /* a VIP address only by ctl's vip_filter (xlb.c: process()) */
    u8 pad[3];
    u32 hash;         /* the flow hash, once computed */
    u32 vip_id;       /* XLB_NO_VIP until a VIP is found */
    u32 backend_id;   /* XLB_NO_BACKEND until one is chosen */
};
#define PARSED_INIT {.vip_id = XLB_NO_VIP, .backend_id = XLB_NO_BACKEND}

/* Ethernet and at most one 802.1Q/802.1ad tag. On success returns 0 with
 * *l2_len = 14 (untagged) or 18 (tagged) and *proto = the ethertype after
 * the tag (network order; a second tag is not looked into, so QinQ's inner
 * tag shows as ETH_P_8021Q). Returns -1 if the frame is too short. */
static __always_inline int parse_l2(void *data, void *end, u32 *l2_len, u16 *proto)
{
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return -1;
    *l2_len = sizeof(*eth);
    u16 p = eth->h_proto;
    if (p == bpf_htons(ETH_P_8021Q) || p == bpf_htons(ETH_P_8021AD)) {
        struct vlan_hdr *vh = (void *)(eth + 1);
        if ((void *)(vh + 1) > end)
            return -1;
        p = vh->proto;
        *l2_len += sizeof(*vh);
    }
    *proto = p;
    return 0;
}

/* The IPv4 header after an L2 header of l2_len bytes, or 0 if it is cut short
 * or not a plausible one (version 4, ihl >= 5). Options are not checked:
 * ip->ihl says whether there are any. */
static __always_inline struct iphdr *ipv4_hdr(void *data, void *end, u32 l2_len)
{
    if (l2_len > MAX_L2_LEN)  /* the verifier needs the bound */
        return 0;
    struct iphdr *ip = data + l2_len;
    if ((void *)(ip + 1) > end || ip->version != 4 || ip->ihl < 5)
        return 0;
    return ip;
}

/* The IPv6 fixed header after an L2 header of l2_len bytes, or 0 if it is cut
 * short or its version is not 6. Extension headers are not walked. */
static __always_inline struct ipv6hdr *ipv6_hdr(void *data, void *end, u32 l2_len)
{
    if (l2_len > MAX_L2_LEN)  /* the verifier needs the bound */
        return 0;
    struct ipv6hdr *ip6 = data + l2_len;
    if ((void *)(ip6 + 1) > end || ip6->version != 6)
        return 0;
    return ip6;
}

/* What an IPv6 extension-header chain holds, from ipv6_ext(). */
enum ipv6_ext_kind {
    IPV6_EXT_OPTIONS = 1,    /* hop-by-hop, routing or destination options, no fragment header */
    IPV6_EXT_FRAGMENT = 2,   /* a fragment header somewhere in the chain */
    IPV6_EXT_TRUNCATED = 3,  /* an extension header cut short */
};

/* Whether next-header value nh starts an extension-header chain ipv6_ext() walks. */
static __always_inline int ipv6_is_ext(u8 nh)
{
    return nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS ||
           nh == IPPROTO_FRAGMENT;
}

/* Walk the extension headers behind ip6 (whose nexthdr passed ipv6_is_ext) up to
 * IPV6_MAX_EXT of them: a fragment header anywhere makes the packet a fragment; a chain
 * too long to see the end of counts as options. */
static __always_inline int ipv6_ext(struct ipv6hdr *ip6, void *end)
{
    u8 nh = ip6->nexthdr;
    void *h = ip6 + 1;
#pragma unroll
    for (int i = 0; i < IPV6_MAX_EXT; i++) {
        if (nh == IPPROTO_FRAGMENT)
            return IPV6_EXT_FRAGMENT;
        if (!ipv6_is_ext(nh))
            return IPV6_EXT_OPTIONS;
        struct ipv6_opt_hdr *o = h;
        if ((void *)(o + 1) > end)
            return IPV6_EXT_TRUNCATED;
        nh = o->nexthdr;
        h += ((u32)o->hdrlen + 1) * 8;  /* hop-by-hop, routing, dest. options: 8-byte units */
    }
    return nh == IPPROTO_FRAGMENT ? IPV6_EXT_FRAGMENT : IPV6_EXT_OPTIONS;
}

/* IPv6 traffic class (the IPv4 tos byte's counterpart). */
static __always_inline u8 ipv6_tclass(const struct ipv6hdr *ip6)
{
    return (bpf_ntohl(*(const u32 *)ip6) >> 20) & 0xFF;
}

/* Ports (and, for TCP, the flags byte) of the L4 header at l4 into p->flow,
 * whose proto says TCP or UDP (anything else is read as UDP). Returns -1 if
 * the header is cut short. */
static __always_inline int parse_l4(void *l4, void *end, struct parsed *p)
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

#endif /* XLB_PARSE_H */
