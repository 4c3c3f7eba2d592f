/* An XDP program that only returns XDP_PASS, for two uses:
 * - the benchmark floor: every per-packet figure in bench/dataplane.py is
 *   also given as a ratio to it;
 * - the lab attaches it (native) on the router's LB-facing veths, because
 *   native XDP_TX on a veth needs an XDP program on the peer, or the LB's
 *   transmitted frames get stuck (xlb/lab/run.py, _attach_helpers).
 */
#include <uapi/linux/bpf.h>

int xlb_floor(struct xdp_md *ctx)
{
    return XDP_PASS;
}
