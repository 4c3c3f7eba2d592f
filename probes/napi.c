// NAPI polls per queue (napi:napi_poll): per NAPI instance and CPU, the polls, the
// packets they took and how many used the whole budget (a saturated queue).
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
};

BPF_HASH(napi, struct napi_key, struct napi_val, 4096);

TRACEPOINT_PROBE(napi, napi_poll) {
    struct napi_key k = {.napi = (u64)args->napi, .cpu = bpf_get_smp_processor_id()};
    struct napi_val *v = napi.lookup(&k);
    if (!v) {
        struct napi_val init = {};
        unsigned short loc = args->data_loc_dev_name & 0xFFFF;
        bpf_probe_read_kernel_str(init.dev, sizeof(init.dev), (void *)args + loc);
        napi.update(&k, &init);
        v = napi.lookup(&k);
        if (!v)
            return 0;
    }
    // only this CPU writes this entry (the key holds the CPU): plain adds suffice
    v->polls++;
    v->work += args->work;
    if (args->work >= args->budget)
        v->full++;
    return 0;
}
