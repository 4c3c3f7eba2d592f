// NET_RX softirq time per CPU (irq:softirq_entry / irq:softirq_exit): nanoseconds
// spent and the number of runs, per CPU. As raw tracepoints (RAW) where the kernel has
// them: the kernel then formats no trace record, the cheapest way in; else as
// tracepoints.
#define NET_RX_VEC 3

struct softirq_val {
    u64 ns;
    u64 runs;
    u64 start;  // when the current NET_RX softirq began (0: none running)
};

BPF_PERCPU_ARRAY(net_rx, struct softirq_val, 1);

static __always_inline void entry(unsigned int vec) {
    if (vec != NET_RX_VEC)
        return;
    u32 zero = 0;
    struct softirq_val *v = net_rx.lookup(&zero);
    if (v)
        v->start = bpf_ktime_get_ns();
}

static __always_inline void exit(unsigned int vec) {
    if (vec != NET_RX_VEC)
        return;
    u32 zero = 0;
    struct softirq_val *v = net_rx.lookup(&zero);
    if (!v || !v->start)
        return;
    v->ns += bpf_ktime_get_ns() - v->start;
    v->runs++;
    v->start = 0;
}

#ifdef RAW
// TP_PROTO(unsigned int vec_nr)
RAW_TRACEPOINT_PROBE(softirq_entry) {
    entry((unsigned int)ctx->args[0]);
    return 0;
}

RAW_TRACEPOINT_PROBE(softirq_exit) {
    exit((unsigned int)ctx->args[0]);
    return 0;
}
#else
TRACEPOINT_PROBE(irq, softirq_entry) {
    entry(args->vec);
    return 0;
}

TRACEPOINT_PROBE(irq, softirq_exit) {
    exit(args->vec);
    return 0;
}
#endif
