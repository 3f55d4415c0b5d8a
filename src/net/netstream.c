/* SPDX-License-Identifier: Apache-2.0 */
#include "net/netstream.h"

void ns_init(struct ns *ns, int port_fd)
{
	memset(ns, 0, sizeof(*ns));
	ns->port_fd = port_fd;
	lg_set_nonblock(port_fd, true);
	lg_reader_init(&ns->rd);
	for (size_t i = 0; i < NS_MAX_STREAMS; i++)
		ns->s[i].fd = -1;
}

static int __attribute__((format(printf, 2, 3))) ns_fail(struct ns *ns, const char *fmt, ...)
{
	va_list ap;

	if (ns->end != 0)
		return -EPROTO;
	va_start(ap, fmt);
	vsnprintf(ns->why, sizeof(ns->why), fmt, ap);
	va_end(ap);
	ns->end = NS_END_PROTO;
	return -EPROTO;
}

/* send() without SIGPIPE where fd is a socket; write() for a port device. */
static ssize_t ns_write(int fd, const void *p, size_t n)
{
	ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);

	if (w < 0 && errno == ENOTSOCK)
		w = write(fd, p, n);
	return w;
}

static void ns_frame(struct ns *ns, uint16_t type, uint32_t id, const void *p, size_t n)
{
	lg_frame_data(&ns->out, type, id, p, n);
}

static struct ns_stream *ns_find(struct ns *ns, uint32_t id)
{
	for (size_t i = 0; i < NS_MAX_STREAMS; i++)
		if (ns->s[i].used && ns->s[i].id == id)
			return &ns->s[i];
	return NULL;
}

static struct ns_stream *ns_slot(struct ns *ns)
{
	for (size_t i = 0; i < NS_MAX_STREAMS; i++)
		if (!ns->s[i].used)
			return &ns->s[i];
	return NULL;
}

static void ns_stream_setup(struct ns *ns, struct ns_stream *s, uint32_t id, int fd)
{
	memset(s, 0, sizeof(*s));
	s->used = true;
	s->id = id;
	s->fd = fd;
	lg_set_nonblock(fd, true);
	ns->nlive++;
}

/* Forgets a stream and closes its socket; sends nothing. */
static void ns_stream_free(struct ns *ns, struct ns_stream *s)
{
	if (!s->used)
		return;
	if (s->fd >= 0)
		close(s->fd);
	lg_buf_free(&s->to_sock);
	memset(s, 0, sizeof(*s));
	s->fd = -1;
	ns->nlive--;
}

/* Resets a stream: tells the peer (NET_CLOSE) and forgets it. */
static void ns_stream_abort(struct ns *ns, struct ns_stream *s)
{
	ns_frame(ns, LG_MSG_NET_CLOSE, s->id, NULL, 0);
	ns_stream_free(ns, s);
}

/* Guest: a local program connected; open a stream for it.  false: full (fd is not taken). */
bool ns_add(struct ns *ns, int fd)
{
	struct ns_stream *s = ns->nlive < NS_MAX_STREAMS ? ns_slot(ns) : NULL;

	if (s == NULL || ns->max_id == UINT32_MAX)
		return false;
	ns_stream_setup(ns, s, ++ns->max_id, fd);
	ns_frame(ns, LG_MSG_NET_OPEN, s->id, NULL, 0);
	return true;
}

/* Writes what the local socket takes; returns false if the stream was reset. */
static bool ns_sock_flush(struct ns *ns, struct ns_stream *s)
{
	while (lg_buf_pending(&s->to_sock) > 0) {
		ssize_t w = ns_write(s->fd, lg_buf_head(&s->to_sock), lg_buf_pending(&s->to_sock));

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN)
			return true;
		if (w <= 0) {
			ns_stream_abort(ns, s); /* EPIPE, ECONNRESET: the local end is gone */
			return false;
		}
		lg_buf_consume(&s->to_sock, (size_t)w);
		s->ack_due += (uint32_t)w;
	}
	if (s->peer_eof && !s->wr_shut) {
		/* ENOTCONN when the local end is already gone is fine. */
		shutdown(s->fd, SHUT_WR);
		s->wr_shut = true;
	}
	return true;
}

static bool ns_want_read(const struct ns *ns, const struct ns_stream *s)
{
	return !s->sock_eof && s->inflight < NS_WINDOW &&
	       lg_buf_pending(&ns->out) < NS_OUT_READ_MAX;
}

/* Reads one piece of the local socket into a NET_DATA frame, within the window. */
static void ns_sock_read(struct ns *ns, struct ns_stream *s)
{
	size_t room = NS_WINDOW - s->inflight;
	struct lg_frame_hdr h = {.type = LG_MSG_NET_DATA, .id = s->id};
	uint8_t *dst;
	ssize_t n;

	if (!ns_want_read(ns, s))
		return;
	if (room > NS_CHUNK)
		room = NS_CHUNK;
	lg_buf_reserve(&ns->out, LG_FRAME_HDR_SIZE + room);
	dst = ns->out.data + ns->out.len;
	n = read(s->fd, dst + LG_FRAME_HDR_SIZE, room);
	if (n > 0) {
		h.len = (uint32_t)n;
		lg_frame_hdr_encode(dst, &h);
		ns->out.len += LG_FRAME_HDR_SIZE + (size_t)n;
		s->inflight += (uint32_t)n;
	} else if (n == 0) {
		s->sock_eof = true;
		ns_frame(ns, LG_MSG_NET_EOF, s->id, NULL, 0);
	} else if (errno != EAGAIN && errno != EINTR) {
		ns_stream_abort(ns, s);
	}
}

/* Both directions are finished and flushed: forget it (no NET_CLOSE: nothing is reset). */
static void ns_stream_maybe_done(struct ns *ns, struct ns_stream *s)
{
	if (s->used && s->sock_eof && s->peer_eof && s->wr_shut && lg_buf_pending(&s->to_sock) == 0)
		ns_stream_free(ns, s);
}

static int ns_on_open(struct ns *ns, const struct lg_frame_hdr *h)
{
	struct ns_stream *s;
	int fd;

	if (ns->on_open == NULL)
		return ns_fail(ns, "unexpected NET_OPEN (stream %u)", h->id);
	if (h->len != 0)
		return ns_fail(ns, "NET_OPEN of stream %u carries %u bytes", h->id, h->len);
	if (h->id <= ns->max_id)
		return ns_fail(ns, "NET_OPEN of stream %u, not above the last one (%u)", h->id,
			       ns->max_id);
	ns->max_id = h->id;
	s = ns->nlive < NS_MAX_STREAMS ? ns_slot(ns) : NULL;
	/*
	 * Over the limit is refused, not an error: the peer may count a
	 * stream as gone a moment before this side has finished with it.
	 */
	fd = s != NULL ? ns->on_open(ns->ctx, h->id) : -1;
	if (fd < 0) {
		ns_frame(ns, LG_MSG_NET_CLOSE, h->id, NULL, 0);
		return 0;
	}
	ns_stream_setup(ns, s, h->id, fd);
	return 0;
}

static int ns_on_frame(struct ns *ns, const struct lg_frame_hdr *h, const uint8_t *p)
{
	const char *name = lg_msg_name(h->type);
	struct ns_stream *s;
	uint32_t n;

	if (h->type == LG_MSG_NET_OPEN)
		return ns_on_open(ns, h);
	if (h->type < LG_MSG_NET_OPEN || h->type > LG_MSG_NET_ACK)
		return ns_fail(ns, "%s message on the net port", name);
	s = ns_find(ns, h->id);
	if (s == NULL) {
		if (h->id == 0 || h->id > ns->max_id)
			return ns_fail(ns, "%s for stream %u, which was never opened", name, h->id);
		return 0; /* for a stream this side has ended already */
	}
	switch (h->type) {
	case LG_MSG_NET_DATA:
		if (s->peer_eof)
			return ns_fail(ns, "NET_DATA after NET_EOF on stream %u", h->id);
		if (h->len == 0 || h->len > NS_CHUNK)
			return ns_fail(ns, "NET_DATA of %u bytes on stream %u (1..%u allowed)",
				       h->len, h->id, NS_CHUNK);
		if (s->recv_queued + h->len > NS_WINDOW)
			return ns_fail(ns, "NET_DATA on stream %u overruns the window of %u bytes",
				       h->id, NS_WINDOW);
		lg_buf_append(&s->to_sock, p, h->len);
		s->recv_queued += h->len;
		ns_sock_flush(ns, s);
		return 0;
	case LG_MSG_NET_EOF:
		if (h->len != 0 || s->peer_eof)
			return ns_fail(ns, "bad or repeated NET_EOF on stream %u", h->id);
		s->peer_eof = true;
		if (ns_sock_flush(ns, s))
			ns_stream_maybe_done(ns, s);
		return 0;
	case LG_MSG_NET_ACK:
		n = h->len == 4 ? lg_get_le32(p) : 0;
		if (n == 0 || n > s->inflight)
			return ns_fail(ns,
				       "NET_ACK on stream %u returns %u bytes of credit, %u are "
				       "outstanding",
				       h->id, n, s->inflight);
		s->inflight -= n;
		return 0;
	case LG_MSG_NET_CLOSE:
		if (h->len != 0)
			return ns_fail(ns, "NET_CLOSE of stream %u carries %u bytes", h->id,
				       h->len);
		/* A reset: hand over what the local socket takes right now, drop the rest. */
		ns_sock_flush(ns, s);
		ns_stream_free(ns, s);
		return 0;
	}
	return 0;
}

void ns_flush_port(struct ns *ns)
{
	while (ns->end == 0 && lg_buf_pending(&ns->out) > 0) {
		ssize_t w = ns_write(ns->port_fd, lg_buf_head(&ns->out), lg_buf_pending(&ns->out));

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN)
			return;
		if (w <= 0) {
			ns->end = NS_END_IO;
			snprintf(ns->why, sizeof(ns->why), "writing the net port: %s",
				 w < 0 ? strerror(errno) : "no progress");
			return;
		}
		lg_buf_consume(&ns->out, (size_t)w);
	}
}

/* Handles every whole frame in the reader. */
static void ns_process(struct ns *ns)
{
	while (ns->end == 0) {
		struct lg_frame_hdr h;
		const uint8_t *payload;
		int r = lg_reader_peek(&ns->rd, &h, &payload);

		if (r == 0)
			return;
		if (r < 0) {
			uint8_t *raw = ns->rd.buf;
			ns_fail(ns, "bad frame header (len %u, type %u, flags %#x): %s",
				lg_get_le32(raw), lg_get_le16(raw + 4), lg_get_le16(raw + 6),
				r == -EMSGSIZE ? "payload over the limit"
					       : "unknown type or flags");
			return;
		}
		ns_on_frame(ns, &h, payload);
		lg_reader_pop(&ns->rd);
	}
}

static void ns_read_port(struct ns *ns)
{
	size_t room;
	uint8_t *p = lg_reader_space(&ns->rd, &room);
	ssize_t n = read(ns->port_fd, p, room);

	if (n > 0) {
		lg_reader_commit(&ns->rd, (size_t)n);
		ns_process(ns);
	} else if (n == 0) {
		ns->end = NS_END_EOF;
		snprintf(ns->why, sizeof(ns->why), "the net port was closed");
	} else if (errno != EAGAIN && errno != EINTR) {
		ns->end = NS_END_IO;
		snprintf(ns->why, sizeof(ns->why), "reading the net port: %s", strerror(errno));
	}
}

/*
 * Fills pfd[0] (the port) and one entry per stream that wants something;
 * tags[i] says whose each entry is.  Returns the count (at most
 * 1 + NS_MAX_STREAMS).  A stream that wants neither direction is left out:
 * poll() would keep reporting its POLLHUP and spin.
 */
int ns_poll_fill(struct ns *ns, struct pollfd *pfd, uint64_t *tags)
{
	int n = 0;

	pfd[n] =
	    (struct pollfd){.fd = ns->port_fd,
			    .events = (short)(POLLIN | (lg_buf_pending(&ns->out) ? POLLOUT : 0))};
	tags[n++] = NS_PORT;
	for (size_t i = 0; i < NS_MAX_STREAMS; i++) {
		struct ns_stream *s = &ns->s[i];
		short ev = 0;

		if (!s->used)
			continue;
		if (ns_want_read(ns, s))
			ev |= POLLIN;
		if (lg_buf_pending(&s->to_sock) > 0)
			ev |= POLLOUT;
		if (ev == 0)
			continue;
		pfd[n] = (struct pollfd){.fd = s->fd, .events = ev};
		tags[n++] = s->id;
	}
	return n;
}

/* Acts on what poll() reported for the entries ns_poll_fill made, then sends what is due. */
void ns_poll_handle(struct ns *ns, const struct pollfd *pfd, const uint64_t *tags, int n)
{
	for (int i = 0; i < n && ns->end == 0; i++) {
		short re = pfd[i].revents;
		struct ns_stream *s;

		if (re == 0)
			continue;
		if (tags[i] == NS_PORT) {
			if (re & POLLOUT)
				ns_flush_port(ns);
			if (re & POLLIN) {
				ns_read_port(ns);
			} else if (re & (POLLHUP | POLLERR | POLLNVAL)) {
				ns->end = (re & POLLHUP) ? NS_END_EOF : NS_END_IO;
				snprintf(ns->why, sizeof(ns->why), "the net port hung up");
			}
			continue;
		}
		/* Frames handled above may have ended it (ids are never reused). */
		s = ns_find(ns, (uint32_t)tags[i]);
		if (s == NULL)
			continue;
		if ((re & (POLLOUT | POLLERR | POLLHUP)) && lg_buf_pending(&s->to_sock) > 0 &&
		    !ns_sock_flush(ns, s))
			continue;
		if ((re & (POLLIN | POLLHUP | POLLERR)) && (pfd[i].events & POLLIN))
			ns_sock_read(ns, s);
	}
	for (size_t i = 0; i < NS_MAX_STREAMS && ns->end == 0; i++) {
		struct ns_stream *s = &ns->s[i];

		if (!s->used)
			continue;
		if (s->ack_due > 0 && lg_buf_pending(&ns->out) < NS_OUT_ACK_MAX) {
			uint8_t le[4];

			lg_put_le32(le, s->ack_due);
			ns_frame(ns, LG_MSG_NET_ACK, s->id, le, sizeof(le));
			s->recv_queued -= s->ack_due;
			s->ack_due = 0;
		}
		ns_stream_maybe_done(ns, s);
	}
	if (ns->end == 0)
		ns_flush_port(ns);
	if (ns->end == 0 && lg_buf_pending(&ns->out) > NS_OUT_HARD)
		ns_fail(ns, "the other side does not read the net port (%zu bytes queued)",
			lg_buf_pending(&ns->out));
}

/* Closes every stream and the port. */
void ns_fini(struct ns *ns)
{
	for (size_t i = 0; i < NS_MAX_STREAMS; i++)
		ns_stream_free(ns, &ns->s[i]);
	if (ns->port_fd >= 0)
		close(ns->port_fd);
	ns->port_fd = -1;
	lg_reader_free(&ns->rd);
	lg_buf_free(&ns->out);
}
