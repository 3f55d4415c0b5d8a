/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Guest TCP connections to the in-guest proxy port, carried to the host as
 * streams over one byte stream (a second virtio-serial port,
 * LG_NET_PORT_NAME).  Frames use the agent framing (proto/proto.h) with the
 * LG_MSG_NET_* types; ids are stream ids chosen by the guest.
 *
 * Each stream the guest opens becomes a socketpair on the host whose other
 * end is handed to lg_egress_serve() on a thread of its own.  Per-stream
 * credit (LG_MSG_NET_ACK) bounds what either side buffers, so one slow
 * connection cannot stall the others or grow memory without bound.  The
 * guest is untrusted: a bad frame ends the whole mux (the VM keeps
 * running, its network is gone) and is logged in one line.
 */
#ifndef LG_NET_NETMUX_H
#define LG_NET_NETMUX_H

#include "common/err.h"
#include "net/egress.h"

struct lg_netmux;

/*
 * Takes ownership of port_fd.  eg must outlive the mux.  eg NULL: the mux
 * runs with no way out, every stream the guest opens is refused at once
 * (NET_CLOSE: its client sees the connection end) until
 * lg_netmux_set_egress() gives it one.
 */
int lg_netmux_start(int port_fd, struct lg_egress *eg, struct lg_netmux **out, struct lg_err **err);
/*
 * Gives a mux started without egress its egress, once (eg must outlive
 * the mux): streams opened after this call are served by eg; those
 * refused before stay refused.  Atomic: safe while the mux thread runs.
 * -EBUSY when it already has one (from start or an earlier call).
 */
int lg_netmux_set_egress(struct lg_netmux *m, struct lg_egress *eg);
/*
 * Closes every stream, joins every thread, frees.  NULL ok.  Closing a
 * stream makes its lg_egress_serve() see EOF, but a proxy thread waiting in
 * eg->ask or in a connect is joined only once that returns: answer or
 * cancel pending approvals first.
 */
void lg_netmux_stop(struct lg_netmux *m);

#endif
