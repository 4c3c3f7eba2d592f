/* SNAT translation: the (address, port) candidates of a pool, and the rewrite of a
 * TCP/UDP packet's addresses and ports in place, with incremental checksum fixes (IPv4
 * header, TCP/UDP over the pseudo-header; a UDP/IPv4 checksum of 0, "none", stays 0),
 * then the MAC swap of the DSR path and XDP_TX. The packet keeps its size, so there is
 * no "too big" case. Included by xlb.c, which owns the maps (snat_rev, conns: BCC
 * rewrites map calls in the main file only) and decides what to write.
 *
 * Needs verdict() (xlb.c), and the packet as parsed: an IPv4 header without options or
 * an IPv6 header without extension headers after p->l2_len bytes, then TCP or UDP.
 *
 * Benchmark builds (-DXLB_BENCH_RESTORE, bench/dataplane.py) put the addresses, ports
 * and MACs back after the rewrite, since BPF_PROG_TEST_RUN hands the modified frame to
 * the next repetition; -DXLB_BENCH_NEW_FLOWS also moves the client's port (and, when it
 * wraps, its address) on by one, so that every repetition is a new flow.
 */
#ifndef XLB_SNAT_H
#define XLB_SNAT_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>
#include "xlb_shared.h"
#include "parse.h"
#include "csum.h"
#include "encap.h"  /* write_l2 */

#define XLB_TCP_FIN 0x01
#define XLB_TCP_RST 0x04

/* Where a translated packet goes: addresses (IPv4 in [0]) and ports, network order. */
struct snat_addrs {
    u32 src[4];
    u32 dst[4];
    u16 sport;
    u16 dport;
};

/* How many (address, port) candidates the pool of `family` has (0: no pool). Ports
 * snat_port_min..snat_port_max are in host order. */
static __always_inline u64 snat_candidates(const struct xlb_config *cfg, u8 family)
{
    u32 host_mask;
    if (family == XLB_AF_INET) {
        if (!cfg->has_snat4)
            return 0;
        host_mask = cfg->snat4_mask;
    } else {
        if (!cfg->has_snat6)
            return 0;
        host_mask = cfg->snat6_mask[3];
    }
    if (cfg->snat_port_max < cfg->snat_port_min)
        return 0;
    u64 nports = (u64)cfg->snat_port_max - cfg->snat_port_min + 1;
    return ((u64)bpf_ntohl(host_mask) + 1) * nports;
}

/* Candidate i (< n) of the pool: address host i / nports, port port_min + i % nports,
 * into the snat_rev key's snat_addr and snat_port. */
static __always_inline void snat_candidate(const struct xlb_config *cfg,
                                           struct xlb_snat_key *k, u64 i)
{
    u64 nports = (u64)cfg->snat_port_max - cfg->snat_port_min + 1;
    u32 host = bpf_htonl((u32)(i / nports));
    if (k->family == XLB_AF_INET) {
        k->snat_addr[0] = cfg->snat4_net | host;
    } else {
        k->snat_addr[0] = cfg->snat6_net[0];
        k->snat_addr[1] = cfg->snat6_net[1];
        k->snat_addr[2] = cfg->snat6_net[2];
        k->snat_addr[3] = cfg->snat6_net[3] | host;
    }
    k->snat_port = bpf_htons((u16)(cfg->snat_port_min + i % nports));
}

/* Are two flow keys the same flow? (all 40 bytes: pad is always 0) */
static __always_inline int flow_eq(const struct xlb_flow_key *a, const struct xlb_flow_key *b)
{
    const u32 *x = (const u32 *)a;
    const u32 *y = (const u32 *)b;
    u32 d = 0;
#pragma unroll
    for (int i = 0; i < (int)(sizeof(*a) / 4); i++)
        d |= x[i] ^ y[i];
    return d == 0;
}

/* Rewrite the ports of the TCP/UDP header at l4, fixing its checksum with `sum` (the
 * address part of the change, from csum_diff32). udp_zero_ok: a UDP checksum of 0 means
 * "none" (IPv4) and stays 0. Returns -1 if the header is cut short. */
static __always_inline int snat_l4(void *l4, void *end, u8 proto, u64 sum, u16 sport,
                                   u16 dport, int udp_zero_ok)
{
    if (proto == IPPROTO_TCP) {
        struct tcphdr *th = l4;
        if ((void *)(th + 1) > end)
            return -1;
        sum += csum_start(th->check) + csum_diff16(th->source, sport) +
               csum_diff16(th->dest, dport);
        th->check = fold_csum(sum);
        th->source = sport;
        th->dest = dport;
        return 0;
    }
    struct udphdr *uh = l4;
    if ((void *)(uh + 1) > end)
        return -1;
    if (uh->check || !udp_zero_ok) {
        sum += csum_start(uh->check) + csum_diff16(uh->source, sport) +
               csum_diff16(uh->dest, dport);
        u16 c = fold_csum(sum);
        uh->check = c ? c : 0xFFFF;  /* 0 would say "no checksum" */
    }
    uh->source = sport;
    uh->dest = dport;
    return 0;
}

/* Rewrite the IP and TCP/UDP headers to `a` (family and protocol as parsed in p).
 * Returns -1 if the headers are cut short (the verifier's bounds). */
static __always_inline int snat_rewrite(void *data, void *end, const struct parsed *p,
                                        const struct snat_addrs *a)
{
    u32 l2 = p->l2_len;
    if (l2 > MAX_L2_LEN)
        return -1;
    if (p->flow.family == XLB_AF_INET) {
        struct iphdr *ip = data + l2;
        if ((void *)(ip + 1) > end)
            return -1;
        u64 sum = csum_diff32(ip->saddr, a->src[0]) + csum_diff32(ip->daddr, a->dst[0]);
        ip->check = fold_csum(csum_start(ip->check) + sum);
        ip->saddr = a->src[0];
        ip->daddr = a->dst[0];
        return snat_l4(ip + 1, end, p->flow.proto, sum, a->sport, a->dport, 1);
    }
    struct ipv6hdr *ip6 = data + l2;
    if ((void *)(ip6 + 1) > end)
        return -1;
    u32 *s = ip6->saddr.in6_u.u6_addr32;
    u32 *d = ip6->daddr.in6_u.u6_addr32;
    u64 sum = 0;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        sum += csum_diff32(s[i], a->src[i]) + csum_diff32(d[i], a->dst[i]);
        s[i] = a->src[i];
        d[i] = a->dst[i];
    }
    return snat_l4(ip6 + 1, end, p->flow.proto, sum, a->sport, a->dport, 0);
}

#ifdef XLB_BENCH_RESTORE
/* Benchmark builds only: put the frame back as it came (p->flow: its addresses and ports;
 * the MACs swapped back), and with XLB_BENCH_NEW_FLOWS move the client on. Checksums are
 * left as the rewrite made them: the program never checks them, and the incremental
 * fix costs the same whatever they hold. */
static __always_inline int snat_bench_restore(void *data, void *end, const struct parsed *p)
{
    u32 l2 = p->l2_len;
    if (l2 > MAX_L2_LEN || write_l2(data, end, 0, l2, 0, ((struct ethhdr *)data)->h_proto))
        return -1;
    u16 *ports;
    u16 *host;  /* the client address's last 16 bits */
    if (p->flow.family == XLB_AF_INET) {
        struct iphdr *ip = data + l2;
        if ((void *)(ip + 1) > end)
            return -1;
        ip->saddr = p->flow.src[0];
        ip->daddr = p->flow.dst[0];
        ports = (void *)(ip + 1);
        host = (u16 *)&ip->saddr + 1;
    } else {
        struct ipv6hdr *ip6 = data + l2;
        if ((void *)(ip6 + 1) > end)
            return -1;
        __builtin_memcpy(&ip6->saddr, p->flow.src, 16);
        __builtin_memcpy(&ip6->daddr, p->flow.dst, 16);
        ports = (void *)(ip6 + 1);
        host = (u16 *)&ip6->saddr + 7;
    }
    if ((void *)(ports + 2) > end)
        return -1;
    ports[0] = p->flow.sport;
    ports[1] = p->flow.dport;
#ifdef XLB_BENCH_NEW_FLOWS
    u16 next = bpf_ntohs(ports[0]) + 1;  /* the next repetition is a new flow */
    ports[0] = bpf_htons(next);
    if (!next)
        *host = bpf_htons(bpf_ntohs(*host) + 1);
#endif
    (void)host;
    return 0;
}
#endif

/* Translate the packet to `a`, swap the MACs like the DSR path (next-hop MAC if
 * configured, else back to the sender) and send it: XDP_TX under `reason`. */
static __always_inline int snat_send(struct xdp_md *ctx, const struct parsed *p,
                                     const struct xlb_config *cfg, const struct snat_addrs *a,
                                     u32 reason)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    if (snat_rewrite(data, end, p, a))
        return verdict(XLB_R_DROP_MALFORMED, XDP_DROP);
    u16 ethertype = p->flow.family == XLB_AF_INET ? bpf_htons(ETH_P_IP) : bpf_htons(ETH_P_IPV6);
    if (write_l2(data, end, 0, p->l2_len, cfg->has_nexthop_mac ? cfg->nexthop_mac : 0,
                 ethertype))
        return verdict(XLB_R_DROP_MALFORMED, XDP_DROP);
#ifdef XLB_BENCH_RESTORE
    if (snat_bench_restore(data, end, p))
        return verdict(XLB_R_DROP_ADJUST_FAILED, XDP_ABORTED);
#endif
    return verdict(reason, XDP_TX);
}

#endif /* XLB_SNAT_H */
