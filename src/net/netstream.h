/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The stream relay shared by both ends of the net port: the host's mux
 * (net/netmux.c) and the guest's forwarder (guest/netfwd.c).  Both carry
 * many byte streams over one port with the agent framing and the
 * LG_MSG_NET_* types; only who opens streams differs (the guest, with
 * NET_OPEN).  docs/agent-protocol.md ("Net port") is the description.
 *
 * Built into both the host library and lg-agent (meson's common_src).
 *
 * Rules, enforced on what the other side sends (the guest is untrusted):
 *   - stream ids are opened in increasing order, so a frame for an id at or
 *     below the highest opened one that is no longer live is a stale frame
 *     for a stream this side has already ended, and is dropped, while a
 *     frame for an id above it names a stream that never existed;
 *   - per stream and direction at most NS_WINDOW bytes of NET_DATA may be
 *     un-ACKed: the receiver buffers at most that much per stream, and one
 *     stream whose reader stalls never blocks the port for the others;
 *   - an ACK may return only credit that is outstanding.
 * Anything else ends the relay (ns->end = NS_END_PROTO, ns->why says why).
 *
 * Memory: the port's output queue is bounded by not reading local sockets
 * above NS_OUT_READ_MAX and holding back ACKs above NS_OUT_ACK_MAX; a peer
 * that does not read the port at all drives it past NS_OUT_HARD, which ends
 * the relay instead of growing without bound.
 */
#ifndef LG_NET_NETSTREAM_H
#define LG_NET_NETSTREAM_H

#include "common/util.h"
#include "proto/proto.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define NS_WINDOW	(256u * 1024u) /* per stream, per direction */
#define NS_MAX_STREAMS	64u
#define NS_CHUNK	LG_DATA_CHUNK /* largest NET_DATA payload */
#define NS_OUT_READ_MAX (1u << 20)    /* stop reading local sockets above this */
#define NS_OUT_ACK_MAX	(256u << 10)  /* hold ACKs back above this */
#define NS_OUT_HARD	(8u << 20)    /* the peer is not reading the port */

enum ns_end {
	NS_END_EOF = 1, /* the peer closed the port */
	NS_END_IO,	/* reading or writing the port failed */
	NS_END_PROTO,	/* the peer broke the protocol; why[] says how */
};

struct ns_stream {
	bool used;
	uint32_t id;
	int fd;		       /* the local socket (non-blocking) */
	struct lg_buf to_sock; /* bytes from the peer not yet written to fd */
	uint32_t recv_queued;  /* bytes received from the peer and not yet ACKed */
	uint32_t ack_due;      /* of those, written to fd: the next ACK */
	uint32_t inflight;     /* bytes sent to the peer and not yet ACKed */
	bool peer_eof;	       /* the peer sent NET_EOF */
	bool wr_shut;	       /* ... and fd has been shut down for writing */
	bool sock_eof;	       /* fd read EOF; NET_EOF was sent */
};

struct ns {
	int port_fd;
	int end; /* enum ns_end, 0 while running */
	char why[200];
	/*
	 * Host: called for each NET_OPEN the peer may make; returns the local
	 * socket for the stream (this side then owns it) or -1 to refuse it
	 * with NET_CLOSE.  NULL (guest): NET_OPEN from the peer is an error.
	 */
	int (*on_open)(void *ctx, uint32_t id);
	void *ctx;
	uint32_t max_id; /* highest stream id opened so far */
	unsigned nlive;
	struct lg_reader rd;
	struct lg_buf out;
	struct ns_stream s[NS_MAX_STREAMS];
};

/* Where each polled fd of ns_poll_fill belongs: NS_PORT or a stream id. */
#define NS_PORT UINT64_MAX

void ns_init(struct ns *ns, int port_fd);
bool ns_add(struct ns *ns, int fd);
void ns_flush_port(struct ns *ns);
int ns_poll_fill(struct ns *ns, struct pollfd *pfd, uint64_t *tags);
void ns_poll_handle(struct ns *ns, const struct pollfd *pfd, const uint64_t *tags, int n);
void ns_fini(struct ns *ns);

#endif
