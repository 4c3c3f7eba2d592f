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
#define XLB_LAYOUT_VERSION 5   /* 2: active-flow epochs in xlb_backend_stats;
                                * 3: flow_guard map, new_flow_limit, reason slots;
                                * 4: trace config in xlb_config, trace maps;
                                * 5: SNAT (xlb_conn's mode, SNAT config in xlb_config,
                                *    snat_rev and snat_stats maps, xlb_meta.max_snat) */

#define XLB_MAX_QUEUES 64      /* RX queues counted; higher ones share the last slot */
#define XLB_NUM_ACTIONS 5      /* XDP_ABORTED .. XDP_REDIRECT */
#define XLB_NO_BACKEND 0xFFFFFFFFu
#define XLB_NO_VIP 0xFFFFFFFFu
#define XLB_MAX_REASONS 32     /* reason_stats slots: room for new reasons without a new layout */
#define XLB_MAX_MISSES 8       /* miss_stats slots: room for new kinds without a new layout */

#define XLB_AF_INET 4
#define XLB_AF_INET6 6

#define XLB_BACKEND_VALID 0x1  /* slot holds a backend (established flows may use it) */

/* Forwarding modes. A VIP's mode (XLB_VIP_F_SNAT in xlb_vip_meta.flags) decides how its
 * NEW flows are forwarded; a connection entry records the mode its flow started in
 * (xlb_conn.mode), and the flow keeps it for life: switching a VIP's mode never moves
 * an established flow to the other mode. */
#define XLB_MODE_DSR 0         /* IP-in-IP to the backend; replies go straight to the client */
#define XLB_MODE_SNAT 1        /* addresses rewritten; replies come back through the LB */
#define XLB_VIP_F_SNAT 0x1     /* xlb_vip_meta.flags: new flows of this VIP use SNAT */
#define XLB_CONN_F_CLOSING 0x1 /* xlb_snat_entry.flags: FIN or RST seen: freed after
                                * snat_close_timeout instead of snat_tcp_timeout */
#define XLB_SNAT_PROBES 16     /* (address, port) candidates a new SNAT flow tries */

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
    XLB_R_TX_SNAT,               /* SNAT flow: translated (source = SNAT address and port,
                                  * destination = backend) and sent to the backend */
    XLB_R_TX_SNAT_REPLY,         /* a backend's reply to a SNAT address and port: translated
                                  * back (source = VIP, destination = client), sent on */
    XLB_R_DROP_SNAT_NO_PORT,     /* new SNAT flow: every candidate (address, port) is taken */
    XLB_R_DROP_SNAT_FLOW_LIMIT,  /* new SNAT flow over the new-entry limit (SNAT needs one) */
    XLB_R_DROP_SNAT_NO_ENTRY,    /* to a SNAT address and port of no translation, or TCP
                                  * (not a SYN) of a SNAT flow whose translation was freed */
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

/* The VIP index: every key of `vips` in an array, one key per slot, so a packet's VIP is
 * one array read and a key compare instead of a hash lookup (~15 ns less on every VIP
 * packet). The agent picks a salt that gives each key its own slot (vip_index_slot() in
 * bpf/xlb.c; xlb/dataplane/vipindex.py computes the same), writes the idle one of two
 * banks, then points ctl.vip_index at it (bank << 15 | salt), so a packet reads one whole
 * bank, old or new. The index always holds every key of `vips` or is off (0: more than
 * XLB_VIP_INDEX_MAX_KEYS keys, or no salt separated them): a key that is not in the
 * active bank is no VIP. */
#define XLB_VIP_INDEX_SLOTS 256     /* per bank */
#define XLB_VIP_INDEX_MAX_KEYS 64
struct xlb_vip_slot {
    struct xlb_vip_key key;     /* all zero: empty (family 0 matches no packet) */
    struct xlb_vip_meta meta;
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
    __u32 snat_addr[4];  /* SNAT flows: the source address the backend sees */
    __u16 snat_port;     /* SNAT flows: the source port the backend sees */
    __u8 mode;           /* XLB_MODE_*: the mode the flow started in, kept for life */
    __u8 pad;
    __u32 hash;          /* the flow hash (outer source, flow label), kept so a packet of a
                          * known flow need not compute it; 0: not kept (an entry made by an
                          * older xlb, or by hand): computed */
};

/* Key of the reverse-translation table `snat_rev` (LRU hash, common LRU: replies may
 * arrive on another CPU than the flow's packets): a reply as it arrives from the
 * backend, source = backend address and port, destination = SNAT address and port.
 * Inserted with BPF_NOEXIST: that insert is what claims an (address, port) for a flow,
 * atomically across CPUs, so two flows never share one. */
struct xlb_snat_key {
    __u32 snat_addr[4];
    __u32 backend_addr[4];
    __u16 snat_port;
    __u16 backend_port;
    __u8 proto;
    __u8 family;
    __u16 pad;
};

struct xlb_snat_entry {  /* value of `snat_rev` */
    struct xlb_flow_key flow; /* the flow as the client sent it: client -> VIP */
    __u64 last_seen_ns;  /* coarse clock, refreshed (at most once a second) by packets both
                          * ways; an entry idle past its timeout may be taken over by a
                          * new flow (compare-and-swap on this field: one winner) */
    __u32 vip_id;
    __u32 backend_id;
    __u32 flags;         /* XLB_CONN_F_CLOSING */
    __u32 pad;
};

struct xlb_snat_stats {  /* per-CPU, per VIP (map `snat_stats`, index vip_id) */
    __u64 packets;       /* client -> backend, translated */
    __u64 bytes;
    __u64 reply_packets; /* backend -> client, translated back */
    __u64 reply_bytes;
    __u64 translations;  /* (address, port) claimed for new flows */
    __u64 no_port;       /* new flows dropped: no free (address, port) */
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
    /* SNAT pools (the LB's own source addresses for SNAT flows), stored like src4/src6:
     * an address of the pool is net | host with host's bits inside mask (mask = the host
     * bits, network order). Pools are /16../32 (IPv4) and /96../128 (IPv6), so the host
     * bits fit one word: snat4_mask, snat6_mask[3]. Candidate i of n = (~mask + 1) x
     * (port_max - port_min + 1): host i / nports, port port_min + i % nports. A packet to
     * an address in a pool (dst & ~mask == net) is a reply to translate back. */
    __u32 snat4_net;
    __u32 snat4_mask;     /* network order, as src4_mask */
    __u32 snat6_net[4];
    __u32 snat6_mask[4];
    __u8 has_snat4;       /* a pool is configured for the family */
    __u8 has_snat6;
    __u16 snat_port_min;
    __u16 snat_port_max;
    __u16 vip_index;      /* the VIP index's active bank and salt (see struct xlb_vip_slot);
                           * 0: no index (vips is looked up) */
    __u32 snat_tcp_timeout;   /* seconds idle before a TCP translation may be taken over */
    __u32 snat_udp_timeout;   /* the same for UDP */
    __u32 snat_close_timeout; /* the same for TCP after a FIN or RST */
    __u32 vip_filter;     /* bit vip_filter_bit(a) set for every VIP address a: a clear bit
                           * means "not a VIP address" without a lookup; 0: no filter (every
                           * destination is looked up in vip_addrs first) */
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
    __u64 max_snat;       /* entries of snat_rev */
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
    __u32 snat_addr[4];   /* SNAT (tx_snat, tx_snat_reply): the SNAT address and port */
    __u16 snat_port;
    __u8 mode;            /* XLB_MODE_* of the flow (DSR when not a VIP flow) */
    __u8 pad;
    __u32 pad2;
};

struct xlb_trace_stats { /* per-CPU single entry of map `trace_stats` */
    __u64 written;        /* events put in the ring buffer */
    __u64 lost;           /* events the ring buffer had no room for */
};

#endif /* XLB_SHARED_H */
