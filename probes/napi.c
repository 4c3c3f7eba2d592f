// NAPI polls per queue (napi:napi_poll): per NAPI instance and CPU, the polls, the
// packets they took and how many used the whole budget (a saturated queue). As a raw
// tracepoint (RAW) where the kernel has them, reading the device's name and the NAPI's
// id at offsets from the running kernel's BTF (NAPI_DEV, DEV_NAME, NAPI_ID; -1 when
// unknown); else as a tracepoint.
struct napi_key {
    u64 napi;
    u32 cpu;
    u32 pad;
};

struct napi_val {
    u64 polls;
    u64 work;
    u64 full;
    char dev[16];
    u32 napi_id;
    u32 pad;
};

BPF_HASH(napi, struct napi_key, struct napi_val, 4096);

static __always_inline struct napi_val *entry(void *n) {
    struct napi_key k = {.napi = (u64)n, .cpu = bpf_get_smp_processor_id()};
    struct napi_val *v = napi.lookup(&k);
    if (v)
        return v;
    struct napi_val init = {};
#if NAPI_ID >= 0
    bpf_probe_read_kernel(&init.napi_id, sizeof(init.napi_id), n + NAPI_ID);
#endif
#ifdef RAW
    void *dev = 0;
    bpf_probe_read_kernel(&dev, sizeof(dev), n + NAPI_DEV);
    if (dev)
        bpf_probe_read_kernel_str(init.dev, sizeof(init.dev), dev + DEV_NAME);
#endif
    napi.update(&k, &init);
    return napi.lookup(&k);
}

static __always_inline void count(struct napi_val *v, int work, int budget) {
    // only this CPU writes this entry (the key holds the CPU): plain adds suffice
    v->polls++;
    v->work += work;
    if (work >= budget)
        v->full++;
}

#ifdef RAW
// TP_PROTO(struct napi_struct *napi, int work, int budget)
RAW_TRACEPOINT_PROBE(napi_poll) {
    struct napi_val *v = entry((void *)ctx->args[0]);
    if (v)
        count(v, (int)ctx->args[1], (int)ctx->args[2]);
    return 0;
}
#else
TRACEPOINT_PROBE(napi, napi_poll) {
    struct napi_val *v = entry(args->napi);
    if (!v)
        return 0;
    if (!v->dev[0]) {
        unsigned short loc = args->data_loc_dev_name & 0xFFFF;
        bpf_probe_read_kernel_str(v->dev, sizeof(v->dev), (void *)args + loc);
    }
    count(v, args->work, args->budget);
    return 0;
}
#endif
