/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The guest end of the net port: a forwarder that listens on
 * 127.0.0.1:LG_NET_PROXY_PORT and carries each accepted connection to the
 * host as a stream (net/netstream.h).  It is a pipe and nothing more: it
 * does not look at the bytes.  The host's proxy parses the requests and
 * decides; a program in the guest that skips this forwarder has no other
 * way out (there is no NIC).
 *
 * It runs as a child of PID 1 (init.c) so that a failure here costs the
 * network and not the agent, and as `lg-agent --netfwd-fd N` in tests.
 */
#include "guest/agent.h"

#include "common/util.h"
#include "net/netstream.h"
#include "proto/proto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int listen_loopback(uint16_t port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	int one = 1;
	int fd;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 128) < 0) {
		int r = -errno;
		close(fd);
		return r;
	}
	return fd;
}

/* Takes what is waiting; over the stream limit a connection is closed at once. */
static void accept_all(struct ns *ns, int lfd)
{
	for (int i = 0; i < 16; i++) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				agent_log("netfwd: accept: %s", strerror(errno));
			return;
		}
		if (!ns_add(ns, fd))
			close(fd);
	}
}

int netfwd_serve(int port_fd, uint16_t listen_port)
{
	struct pollfd pfd[2 + NS_MAX_STREAMS];
	uint64_t tags[2 + NS_MAX_STREAMS];
	struct ns *ns;
	int lfd, r;

	signal(SIGPIPE, SIG_IGN); /* a socketpair as the port in tests */
	lfd = listen_loopback(listen_port);
	if (lfd < 0) {
		agent_log("netfwd: listen on 127.0.0.1:%u: %s", listen_port, strerror(-lfd));
		close(port_fd);
		return lfd;
	}
	ns = xzalloc(sizeof(*ns));
	ns_init(ns, port_fd);
	while (ns->end == 0) {
		int n = ns_poll_fill(ns, pfd, tags);
		int l = n;

		pfd[n] = (struct pollfd){.fd = lfd, .events = POLLIN};
		tags[n++] = NS_PORT - 1;
		if (poll(pfd, (nfds_t)n, -1) < 0) {
			if (errno == EINTR)
				continue;
			agent_log("netfwd: poll: %s", strerror(errno));
			break;
		}
		ns_poll_handle(ns, pfd, tags, l);
		if (ns->end == 0 && (pfd[l].revents & POLLIN)) {
			accept_all(ns, lfd);
			ns_flush_port(ns);
		}
	}
	if (ns->end != 0 && ns->end != NS_END_EOF)
		agent_log("netfwd: %s; the network is closed", ns->why);
	r = ns->end == NS_END_PROTO ? -EPROTO : 0;
	close(lfd);
	ns_fini(ns);
	free(ns);
	return r;
}
