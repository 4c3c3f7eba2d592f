/* Structures and constants shared by the XDP data plane (bpf/xlb.c, and the
 * headers it includes: parse.h, encap.h, icmp.h) and Python.
 * xlb/dataplane/structs.py mirrors every struct and enum here;
 * tests/dataplane/test_structs.py compiles this header with BCC and checks the
 * two agree.
 * Addresses and ports are in network byte order; IPv4 addresses use addr[0]
 * with the other three words zero. Change a layout => bump XLB_LAYOUT_VERSION
 * (pinned maps of an older layout are then refused, not misread).
 */
#ifndef XLB_SHARED_H
#define XLB_SHARED_H

#define XLB_MAGIC 0x786c6230 /* "xlb0" */
#define XLB_LAYOUT_VERSION 4   /* 2: active-flow epochs in xlb_backend_stats;
                                * 3: flow_guard map, new_flow_limit, reason slots;
                                * 4: trace config in xlb_config, trace maps */

#define XLB_MAX_QUEUES 64      /* RX queues counted; higher ones share the last slot */
#define XLB_NUM_ACTIONS 5      /* XDP_ABORTED .. XDP_REDIRECT */
#define XLB_NO_BACKEND 0xFFFFFFFFu
#define XLB_NO_VIP 0xFFFFFFFFu
#define XLB_MAX_REASONS 32     /* reason_stats slots: room for new reasons without a new layout */
#define XLB_MAX_MISSES 8       /* miss_stats slots: room for new kinds without a new layout */

#define XLB_AF_INET 4
#define XLB_AF_INET6 6

#define XLB_BACKEND_VALID 0x1  /* slot holds a backend (established flows may use it) */

/* Active flows are counted per "activity epoch" of 2^XLB_ACTIVE_EPOCH_SHIFT ns
 * of CLOCK_MONOTONIC (33: about 8.6 s): a flow counts once in an epoch, on
 * its first packet in it. See struct xlb_backend_stats. */
#define XLB_ACTIVE_EPOCH_SHIFT 33

/* Why a packet got its verdict; one per-CPU counter each. Every packet the
 * program sees is counted under exactly one reason. */
enum xlb_reason {
    XLB_R_PASS_NOT_IP = 0,       /* neither IPv4 nor IPv6 */
    XLB_R_PASS_NOT_VIP,          /* destination is not a VIP address: host traffic */
    XLB_R_PASS_VIP_NO_SERVICE,   /* VIP address, but no VIP on that port/protocol */
    XLB_R_PASS_VIP_OTHER_PROTO,  /* VIP address, not TCP/UDP, a ping or an ICMP error we route */
    XLB_R_DROP_MALFORMED,        /* truncated or inconsistent headers */
    XLB_R_DROP_FRAGMENT,         /* IPv4 fragment or IPv6 fragment header (anywhere in the
                                  * extension chain) to a VIP */
    XLB_R_DROP_IP_OPTIONS,       /* IPv4 options or IPv6 extension headers to a VIP */
    XLB_R_DROP_NO_BACKEND,       /* VIP has no usable backend */
    XLB_R_DROP_ADJUST_FAILED,    /* bpf_xdp_adjust_head/tail refused */
    XLB_R_TX_ICMP_TOO_BIG,       /* too big after encapsulation: ICMP answered */
    XLB_R_TX_ENCAP,              /* balanced: encapsulated to a backend */
    XLB_R_TX_ENCAP_NO_ENTRY,     /* TCP, not a SYN, no connection entry: Maglev, no entry made */
    XLB_R_TX_ENCAP_FLOW_LIMIT,   /* new flow over the new-entry limit: Maglev, no entry made */
    XLB_R_TX_ENCAP_ICMP_ERROR,   /* ICMP error about a VIP flow: to the flow's backend */
    XLB_R_TX_ICMP_ECHO,          /* echo request to a VIP address: answered */
    XLB_R_DROP_ICMP_TOO_BIG,     /* ICMP error about a VIP flow, too big once encapsulated */
    XLB_R_MAX
};

/* Connection-table misses, by kind; one per-CPU counter each (map miss_stats),
 * counted apart from the verdict (a miss may still end in a drop). A SYN never
 * looks the table up (it always asks Maglev), so every SYN balanced is a miss:
 * a new flow. A TCP non-SYN miss is a flow whose state this LB lost (restart
 * with new maps, eviction, another LB that carried it until now) or made-up
 * packets (an ACK flood). A UDP miss is a new flow, or one whose entry expired. */
enum xlb_miss {
    XLB_MISS_TCP_SYN = 0,
    XLB_MISS_TCP_NON_SYN,
    XLB_MISS_UDP,
    XLB_MISS_MAX
};

/* How a packet's backend was chosen (flow traces). The order is the API's
 * (xlb/api/protocol.py PATHS; a test checks the two agree). */
enum xlb_path {
    XLB_PATH_NONE = 0,       /* no backend chosen: not a VIP flow, answered, or dropped */
    XLB_PATH_CONN,           /* connection-table hit: the flow's recorded backend */
    XLB_PATH_MAGLEV,         /* no entry (UDP or ICMP error, TCP non-SYN): Maglev */
    XLB_PATH_MAGLEV_SYN,     /* a TCP SYN: Maglev (a SYN never looks the table up) */
    XLB_PATH_MAGLEV_STALE,   /* the entry's backend is gone: Maglev, entry updated */
    XLB_PATH_MAX
};

/* Flow traces: struct xlb_trace_config's mode and field bits. */
#define XLB_TRACE_OFF 0
#define XLB_TRACE_ON 1
#define XLB_TF_SRC 0x1        /* source address in src/src_mask */
#define XLB_TF_DST 0x2        /* destination address in dst/dst_mask */
#define XLB_TF_HOST 0x4       /* source or destination in host/host_mask */
#define XLB_TF_SPORT 0x8
#define XLB_TF_DPORT 0x10
#define XLB_TF_PORT 0x20      /* source or destination port */
#define XLB_TF_PROTO 0x40
#define XLB_TF_VIP 0x80
#define XLB_TF_BACKEND 0x100
#define XLB_TF_ALL 0x1FF

struct xlb_vip_key {
    __u32 addr[4];
    __u16 port;      /* 0 = any port */
    __u8 proto;      /* IPPROTO_TCP / IPPROTO_UDP */
    __u8 family;     /* XLB_AF_INET / XLB_AF_INET6 */
};

struct xlb_vip_meta {
    __u32 vip_id;    /* index of the per-VIP counters */
    __u32 ring_slot; /* which Maglev ring in `rings` this VIP uses */
    __u32 flags;
    __u32 pad;
};

struct xlb_addr_key {    /* key of vip_addrs: is this destination a VIP address at all? */
    __u32 addr[4];
    __u8 family;
    __u8 pad[3];
};

struct xlb_flow_key {
    __u32 src[4];
    __u32 dst[4];
    __u16 sport;
    __u16 dport;
    __u8 proto;
    __u8 family;
    __u16 pad;
};

struct xlb_conn {        /* connection-table value */
    __u32 backend_id;
    __u32 vip_id;
    __u64 last_seen_ns;  /* coarse clock; refreshed at most once a second, and on the
                          * first packet of an activity epoch */
};

struct xlb_backend {
    __u32 addr[4];
    __u8 family;
    __u8 flags;          /* XLB_BACKEND_* */
    __u16 pad;
};

/* Which packets emit a trace event (member `trace` of struct xlb_config): those
 * matching every field named in `fields` (0: every packet), 1 in `sample` of them
 * (0 or 1: all). Prefixes are stored masked; addresses and ports in network
 * order. Written only by Dataplane.set_trace: applying a config keeps it. */
struct xlb_trace_config {
    __u8 mode;            /* XLB_TRACE_OFF / XLB_TRACE_ON */
    __u8 family;          /* of src, dst and host: XLB_AF_INET / XLB_AF_INET6 */
    __u8 proto;           /* IPPROTO_TCP / IPPROTO_UDP / ... */
    __u8 pad;
    __u32 fields;         /* XLB_TF_* */
    __u32 sample;
    __u16 sport;
    __u16 dport;
    __u16 port;
    __u16 pad2;
    __u32 vip_id;
    __u32 backend_id;
    __u32 src[4];
    __u32 src_mask[4];
    __u32 dst[4];
    __u32 dst_mask[4];
    __u32 host[4];
    __u32 host_mask[4];
};

struct xlb_config {      /* single entry of map `ctl` */
    __u8 nexthop_mac[6];
    __u8 has_nexthop_mac; /* 0: send encapsulated frames back to the sender's MAC */
    __u8 pad0;
    __u32 mtu;            /* largest IP packet after encapsulation */
    __u32 src4_net;       /* outer IPv4 source = src4_net | (hash & src4_mask) */
    __u32 src4_mask;
    __u32 src6_net[4];
    __u32 src6_mask[4];
    __u32 new_flow_limit; /* connection entries a CPU may create per second; 0 = no limit */
    struct xlb_trace_config trace;
};

struct xlb_flow_guard {  /* per-CPU single entry of map `flow_guard`: new entries this second */
    __u64 window_ns;      /* coarse clock at the start of the current one-second window */
    __u64 count;          /* entries created in it */
};

struct xlb_meta {        /* single entry of map `meta`: what the pinned maps were made for */
    __u32 magic;
    __u32 layout_version;
    __u32 ring_size;
    __u32 max_vips;
    __u32 max_backends;
    __u32 max_queues;
    __u64 max_connections;
};

struct xlb_queue_stats {
    __u64 packets;
    __u64 bytes;
    __u64 actions[XLB_NUM_ACTIONS];
};

struct xlb_traffic {
    __u64 packets;
    __u64 bytes;
};

struct xlb_backend_stats {
    __u64 packets;
    __u64 bytes;
    __u64 new_conns;
    /* Distinct flows that sent a packet in an epoch (epoch = ns >> XLB_ACTIVE_EPOCH_SHIFT),
     * in slot epoch & 1; active_epoch[slot] says which epoch the slot holds (a slot
     * whose epoch is not the one asked for is stale). Per CPU, so readers sum the
     * CPUs' slots that hold the wanted epoch. */
    __u64 active[2];
    __u64 active_epoch[2];
};

/* One traced packet: a record of the ring buffer `trace_events`. */
struct xlb_trace_event {
    __u64 time_ns;        /* CLOCK_MONOTONIC */
    __u32 cpu;
    __u32 queue;          /* RX queue */
    __u32 ifindex;
    __u32 vip_id;         /* XLB_NO_VIP: not a VIP flow */
    __u32 backend_id;     /* XLB_NO_BACKEND: none chosen */
    __u32 hash;           /* the flow hash (0 when not computed) */
    struct xlb_flow_key flow; /* as parsed, client -> VIP; an ICMP error's quoted flow turned
                               * around; ports only for TCP/UDP to a VIP address */
    __u32 outer_src[4];   /* outer source address when encapsulated */
    __u8 outer_family;    /* 0: not encapsulated */
    __u8 path;            /* enum xlb_path */
    __u8 action;          /* XDP action */
    __u8 reason;          /* enum xlb_reason */
    __u32 len;            /* bytes of the frame as it arrived */
};

struct xlb_trace_stats { /* per-CPU single entry of map `trace_stats` */
    __u64 written;        /* events put in the ring buffer */
    __u64 lost;           /* events the ring buffer had no room for */
};

#endif /* XLB_SHARED_H */
