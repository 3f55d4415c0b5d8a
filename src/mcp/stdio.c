/* SPDX-License-Identifier: Apache-2.0 */
#include "mcp/stdio.h"

#include "common/log.h"
#include "common/util.h"
#include "proto/proto.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

struct stdio_transport {
	int out_fd;
	pthread_mutex_t lock; /* one message at a time on stdout */
	bool broken;
};

static int stdio_send(void *transport, void *stream, const char *json)
{
	struct stdio_transport *t = transport;
	size_t n = strlen(json);
	int r = 0;

	pthread_mutex_lock(&t->lock);
	if (t->broken) {
		r = -EPIPE;
	} else if (lg_write_all(t->out_fd, json, n) < 0 || lg_write_all(t->out_fd, "\n", 1) < 0) {
		t->broken = true;
		r = -EPIPE;
	}
	pthread_mutex_unlock(&t->lock);
	return r;
}

int mcp_stdio_serve(struct mcp_server *srv, int in_fd, int out_fd, int cancel_fd,
		    struct lg_err **err)
{
	struct stdio_transport t = {.out_fd = out_fd};
	struct mcp_session *ss;
	struct lg_buf in = {0};
	bool skipping = false; /* inside a line that was too long */
	int ret = 0;

	pthread_mutex_init(&t.lock, NULL);
	ss = mcp_session_new(srv, stdio_send, &t);
	lg_info("mcp: serving on stdio (session %s)", mcp_session_id(ss));
	for (;;) {
		struct pollfd pfd[2] = {{.fd = in_fd, .events = POLLIN},
					{.fd = cancel_fd, .events = POLLIN}};
		ssize_t r;

		if (poll(pfd, cancel_fd >= 0 ? 2 : 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			ret = lg_err_sys(err, "poll");
			break;
		}
		if (cancel_fd >= 0 && (pfd[1].revents & POLLIN))
			break;
		lg_buf_reserve(&in, 65536);
		r = read(in_fd, in.data + in.len, in.cap - in.len);
		if (r < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			ret = lg_err_sys(err, "read stdin");
			break;
		}
		if (r == 0)
			break; /* the client closed stdin: the session is over */
		in.len += (size_t)r;

		for (;;) {
			const uint8_t *head = lg_buf_head(&in);
			size_t pending = lg_buf_pending(&in);
			const uint8_t *nl = pending ? memchr(head, '\n', pending) : NULL;

			if (nl == NULL) {
				/* A line that outgrows the limit is answered once and skipped. */
				if (!skipping && pending > MCP_MAX_MESSAGE) {
					mcp_session_handle_text(ss, (const char *)head, pending,
								NULL);
					skipping = true;
				}
				if (skipping)
					lg_buf_consume(&in, pending);
				break;
			}
			size_t n = (size_t)(nl - head);
			if (!skipping && n > 0 && !(n == 1 && head[0] == '\r'))
				mcp_session_handle_text(ss, (const char *)head, n, NULL);
			skipping = false;
			lg_buf_consume(&in, n + 1);
		}
	}
	mcp_session_close(ss);
	lg_buf_free(&in);
	pthread_mutex_destroy(&t.lock);
	return ret;
}
