/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lg-agent: the guest side of the agent protocol (proto/proto.h).  init.c
 * does the PID-1 duties and finds the port; agent.c serves requests on it.
 */
#ifndef LG_GUEST_AGENT_H
#define LG_GUEST_AGENT_H

#include <stdbool.h>
#include <stdint.h>

/* How a session on the port ended. */
enum agent_end {
	AGENT_END_EOF = 1,  /* the host closed the stream */
	AGENT_END_SHUTDOWN, /* the host asked for SHUTDOWN; it was acknowledged */
	AGENT_END_PROTO,    /* the host broke the framing; a final RESULT (id 0) was sent */
	AGENT_END_IO,	    /* reading or writing the port failed */
};

/*
 * Serves the protocol on fd (a byte stream: virtio-serial port or socket)
 * until the session ends, then kills the process groups of every exec still
 * running.  Does not take ownership of fd; makes it non-blocking and
 * close-on-exec.  Returns an enum agent_end, or -errno if the loop could not
 * be set up at all.  Works as PID 1 (it also reaps orphans) and as an
 * ordinary process.
 *
 * setup_errno (0: none) and setup_msg (one line): the guest could not set
 * up its root file system; HELLO carries them as ERRNO and MESSAGE and the
 * host gives up on the sandbox (docs/agent-protocol.md).  Requests are
 * still served, on the initramfs root.
 */
int agent_serve(int fd, int setup_errno, const char *setup_msg);

/*
 * The net port's forwarder (netfwd.c): listens on 127.0.0.1:listen_port
 * and carries every connection to the host over port_fd (net/netstream.h)
 * until the port closes.  Takes ownership of port_fd.  Returns 0 when the
 * host closed the port, -errno otherwise.
 */
int netfwd_serve(int port_fd, uint16_t listen_port);

/* "lg-agent: MSG" on stderr (the console when PID 1). */
void agent_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
