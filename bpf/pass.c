/* The benchmark floor: an XDP program that only returns XDP_PASS. Every
 * per-packet figure in bench/dataplane.py is also given as a ratio to it. */
#include <uapi/linux/bpf.h>

int xlb_floor(struct xdp_md *ctx)
{
    return XDP_PASS;
}
