// NET_RX softirq time per CPU (irq:softirq_entry / irq:softirq_exit): nanoseconds
// spent and the number of runs, per CPU.
#define NET_RX_VEC 3

struct softirq_val {
    u64 ns;
    u64 runs;
};

BPF_PERCPU_ARRAY(entered, u64, 1);
BPF_PERCPU_ARRAY(net_rx, struct softirq_val, 1);

TRACEPOINT_PROBE(irq, softirq_entry) {
    if (args->vec != NET_RX_VEC)
        return 0;
    u32 zero = 0;
    u64 *t = entered.lookup(&zero);
    if (t)
        *t = bpf_ktime_get_ns();
    return 0;
}

TRACEPOINT_PROBE(irq, softirq_exit) {
    if (args->vec != NET_RX_VEC)
        return 0;
    u32 zero = 0;
    u64 *t = entered.lookup(&zero);
    if (!t || !*t)
        return 0;
    struct softirq_val *v = net_rx.lookup(&zero);
    if (v) {
        v->ns += bpf_ktime_get_ns() - *t;
        v->runs++;
    }
    *t = 0;
    return 0;
}
