/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzzes the host end of the net port: the input is what a hostile guest
 * writes to the port, fed to a real mux (lg_netmux_start) with the real
 * egress proxy behind it.  The only allowlist entry is 127.0.0.1:1, where
 * nothing listens: no input can reach the network or wait on DNS, and
 * every other destination is refused without asking anyone.
 *
 * The mux must not crash, must close the port (on EOF or on a violation)
 * and must let lg_netmux_stop() return; a hang shows up as a libFuzzer
 * timeout.
 */
#include "common/log.h"
#include "net/egress.h"
#include "net/netmux.h"
#include "proto/proto.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct lg_allowlist *al;
static struct lg_egress eg;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct lg_netmux *m = NULL;
	struct lg_err *err = NULL;
	size_t off = 0;
	bool eof = false, shut = false;
	uint8_t buf[65536];
	int sv[2];

	if (al == NULL) {
		signal(SIGPIPE, SIG_IGN);
		lg_log_set_level(LG_LOG_ERROR); /* one warning per violating input otherwise */
		if (lg_allowlist_parse("127.0.0.1:1", &al, &err) < 0)
			abort();
		lg_egress_init(&eg, al);
		eg.connect_timeout_ms = 200;
		eg.idle_timeout_ms = 200;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0)
		return 0;
	if (lg_netmux_start(sv[1], &eg, &m, &err) < 0)
		abort();
	/* Write the input while reading what the mux answers, until it closes the port. */
	while (!eof) {
		struct pollfd pfd = {.fd = sv[0], .events = POLLIN | (!shut ? POLLOUT : 0)};

		int r = poll(&pfd, 1, 5000);

		/* libFuzzer's -timeout ticks with SIGALRM: an interrupted poll is no hang. */
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			abort(); /* the mux neither took the input nor closed: a hang */
		if (!shut && (pfd.revents & POLLOUT)) {
			ssize_t w = off < size ? write(sv[0], data + off, size - off) : 0;

			if (w > 0)
				off += (size_t)w;
			if (off == size || (w < 0 && errno != EAGAIN)) {
				shutdown(sv[0], SHUT_WR);
				shut = true;
			}
		}
		if (pfd.revents & (POLLIN | POLLHUP)) {
			ssize_t n = read(sv[0], buf, sizeof(buf));

			if (n == 0 || (n < 0 && errno != EAGAIN))
				eof = true;
		}
	}
	lg_netmux_stop(m);
	close(sv[0]);
	return 0;
}
