// XDP exceptions and redirect errors (xdp:xdp_exception, xdp:xdp_redirect_err and,
// where the kernel has it, xdp:xdp_redirect_map_err): a count per program, interface
// and action. Interface indexes are per network namespace: the program id tells which
// program (and so which namespace) the interface belongs to.
struct xdp_key {
    u32 prog_id;
    s32 ifindex;
    u32 act;
    u32 kind;  // 0 exception, 1 redirect error, 2 redirect map error
};

BPF_PERCPU_HASH(xdp_errors, struct xdp_key, u64, 1024);

static __always_inline void count(u32 prog_id, s32 ifindex, u32 act, u32 kind) {
    struct xdp_key k = {.prog_id = prog_id, .ifindex = ifindex, .act = act, .kind = kind};
    u64 zero = 0, *n = xdp_errors.lookup_or_try_init(&k, &zero);
    if (n)
        (*n)++;
}

TRACEPOINT_PROBE(xdp, xdp_exception) {
    count(args->prog_id, args->ifindex, args->act, 0);
    return 0;
}

TRACEPOINT_PROBE(xdp, xdp_redirect_err) {
    count(args->prog_id, args->ifindex, args->act, 1);
    return 0;
}

#ifdef HAVE_REDIRECT_MAP_ERR
TRACEPOINT_PROBE(xdp, xdp_redirect_map_err) {
    count(args->prog_id, args->ifindex, args->act, 2);
    return 0;
}
#endif
