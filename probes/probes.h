// What the probes share: a dropped or reset packet's 5-tuple, and the key of an
// address the agent watches (its VIPs and backends). Mirrored in xlb/probes/layout.py.
#pragma once
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/in.h>

#ifndef MAX_REASONS
#define MAX_REASONS 256
#endif
#ifndef EXAMPLES
#define EXAMPLES 8
#endif
#ifndef MAX_WATCHED
#define MAX_WATCHED 4096
#endif

struct tuple {
    u64 time;        // ktime ns
    u32 reason;
    u8 family;       // 4 or 6
    u8 proto;
    u16 sport;       // network order
    u16 dport;
    u16 pad;
    u8 saddr[16];
    u8 daddr[16];
};

struct addr_key {
    u8 family;
    u8 pad[3];
    u8 addr[16];
};

struct reason_addr {
    u32 reason;
    u32 id;          // the agent's number for a watched address
};
