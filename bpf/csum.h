/* Internet checksums for XDP programs: folding a 64-bit one's-complement sum
 * to 16 bits, the IPv4 header checksum and incremental updates (one 16-bit word;
 * address and port rewrites, for SNAT). Included by encap.h, icmp.h and snat.h
 * (so by xlb.c); needs no map. Do not name a function
 * csum_fold: the kernel headers BCC pulls in already have one.
 */
#ifndef XLB_CSUM_H
#define XLB_CSUM_H

#include <uapi/linux/ip.h>

/* Fold a one's-complement sum (as bpf_csum_diff returns, or of 16-bit words)
 * and complement it: the value to store in a checksum field. */
static __always_inline u16 fold_csum(u64 sum)
{
#pragma unroll
    for (int i = 0; i < 4; i++)
        sum = (sum & 0xffff) + (sum >> 16);
    return ~sum;
}

/* Checksum of an option-less IPv4 header (ip->check must be 0 when called). */
static __always_inline u16 ipv4_csum(struct iphdr *ip)
{
    u16 *w = (u16 *)ip;
    u64 sum = 0;
#pragma unroll
    for (int i = 0; i < (int)(sizeof(*ip) / 2); i++)
        sum += w[i];
    return fold_csum(sum);
}

/* A checksum after one 16-bit word it covers changed from old to new (RFC 1624, eqn. 3):
 * words as they sit in the packet, so no byte-order conversion is needed. */
static __always_inline u16 csum_replace16(u16 check, u16 old, u16 new)
{
    u32 sum = (u16)~check + (u16)~old + (u32)new;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return ~sum;
}

/* Incremental checksum updates for many changed words at once (RFC 1624, eqn. 3,
 * summed in 64 bits): start from csum_start(check), add each change with csum_diff32 /
 * csum_diff16 (values as they sit in the packet: a one's-complement sum does not care
 * about byte order), and store fold_csum(sum). The same delta serves every checksum that
 * covers the changed words (the IPv4 header's, and TCP/UDP's pseudo-header). */
static __always_inline u64 csum_start(u16 check)
{
    return (u16)~check;
}

static __always_inline u64 csum_diff32(u32 old, u32 new)
{
    return (u64)(u32)~old + new;
}

static __always_inline u64 csum_diff16(u16 old, u16 new)
{
    return (u64)(u16)~old + new;
}

#endif /* XLB_CSUM_H */
