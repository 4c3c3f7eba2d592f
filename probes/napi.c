// NAPI polls per queue (napi:napi_poll): per NAPI instance and CPU, the polls, the
// packets they took and how many used the whole budget (a saturated queue). The NAPI's
// id is read at NAPI_ID_OFFSET in struct napi_struct (from the running kernel's BTF;
// -1 when unknown).
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

TRACEPOINT_PROBE(napi, napi_poll) {
    struct napi_key k = {.napi = (u64)args->napi, .cpu = bpf_get_smp_processor_id()};
    struct napi_val *v = napi.lookup(&k);
    if (!v) {
        struct napi_val init = {};
        unsigned short loc = args->data_loc_dev_name & 0xFFFF;
        bpf_probe_read_kernel_str(init.dev, sizeof(init.dev), (void *)args + loc);
#if NAPI_ID_OFFSET >= 0
        bpf_probe_read_kernel(&init.napi_id, sizeof(init.napi_id),
                              (void *)args->napi + NAPI_ID_OFFSET);
#endif
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
