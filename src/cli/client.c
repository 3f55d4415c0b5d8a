/* SPDX-License-Identifier: Apache-2.0 */
#include "cli/client.h"

#include "common/encoding.h"
#include "common/util.h"
#include "lg-config.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

enum { BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_EOF };

/* How long a complete reply waits for the service to close the connection. */
#define DRAIN_MS 200

/* The chunked decoder's states (RFC 9112 section 7.1). */
enum {
	CH_SIZE,
	CH_EXT,
	CH_SIZE_LF,
	CH_DATA,
	CH_DATA_CR,
	CH_DATA_LF,
	CH_TRAILER,
	CH_TRAILER_LINE,
	CH_TRAILER_LF,
	CH_END_LF,
};

/* ---- the head ---- */

static bool is_tchar(unsigned char c)
{
	/* c != 0: strchr would find the terminator. */
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* A byte of a field value or reason phrase: visible, space, tab or obs-text; no CR, LF, NUL. */
static bool is_field_char(unsigned char c)
{
	return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static bool is_id_char(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       c == '.' || c == '_' || c == '-';
}

bool lg_client_id_ok(const char *s)
{
	size_t n = strlen(s);

	for (size_t i = 0; i < n; i++)
		if (!is_id_char((unsigned char)s[i]))
			return false;
	return n >= 1 && n <= 64;
}

static bool name_is(const char *name, size_t len, const char *want)
{
	return strlen(want) == len && strncasecmp(name, want, len) == 0;
}

static int bad_head(struct lg_err **err, const char *what)
{
	return lg_err_msg(err, EBADMSG, "malformed reply from the service: %s", what);
}

static int parse_status_line(const char *p, size_t len, struct lg_client_head *h,
			     struct lg_err **err)
{
	/* "HTTP/1.1 200" [" " reason] */
	if (len < 12 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ')
		return bad_head(err, "not an HTTP/1.x status line");
	for (size_t i = 9; i < 12; i++)
		if (p[i] < '0' || p[i] > '9')
			return bad_head(err, "bad status code");
	h->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
	if (h->status < 200 || h->status > 599)
		return bad_head(err, "status code outside 200..599");
	if (len > 12 && p[12] != ' ')
		return bad_head(err, "bad status code");
	for (size_t i = 13; i < len; i++)
		if (!is_field_char((unsigned char)p[i]))
			return bad_head(err, "control character in the status line");
	return 0;
}

static int parse_length(const char *v, size_t len, uint64_t *out)
{
	uint64_t n = 0;

	/* 19 digits always fit in 64 bits. */
	if (len == 0 || len > 19)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -1;
		n = n * 10 + (uint64_t)(v[i] - '0');
	}
	*out = n;
	return 0;
}

static int parse_field(const char *p, size_t len, struct lg_client_head *h, bool *saw_te,
		       struct lg_err **err)
{
	size_t nl = 0, vs, ve;
	const char *v;

	while (nl < len && is_tchar((unsigned char)p[nl]))
		nl++;
	/* Also refuses obs-fold: a line that starts with a space or tab. */
	if (nl == 0 || nl == len || p[nl] != ':')
		return bad_head(err, "bad header field");
	vs = nl + 1;
	while (vs < len && (p[vs] == ' ' || p[vs] == '\t'))
		vs++;
	ve = len;
	while (ve > vs && (p[ve - 1] == ' ' || p[ve - 1] == '\t'))
		ve--;
	for (size_t i = vs; i < ve; i++)
		if (!is_field_char((unsigned char)p[i]))
			return bad_head(err, "control character in a header field");
	v = p + vs;
	len = ve - vs;

	if (name_is(p, nl, "Content-Length")) {
		uint64_t n;

		if (parse_length(v, len, &n) < 0)
			return bad_head(err, "bad Content-Length");
		if (h->has_length && h->content_length != n)
			return bad_head(err, "conflicting Content-Length fields");
		h->has_length = true;
		h->content_length = n;
	} else if (name_is(p, nl, "Transfer-Encoding")) {
		if (*saw_te || !name_is(v, len, "chunked"))
			return bad_head(err, "a transfer coding other than chunked");
		*saw_te = true;
		h->chunked = true;
	} else if (name_is(p, nl, "Content-Type")) {
		static const char nd[] = "application/x-ndjson";
		size_t k = sizeof(nd) - 1;

		h->ndjson = len >= k && strncasecmp(v, nd, k) == 0 &&
			    (len == k || v[k] == ';' || v[k] == ' ' || v[k] == '\t');
	} else if (name_is(p, nl, "X-Request-Id")) {
		bool ok = len >= 1 && len < sizeof(h->request_id);

		for (size_t i = 0; ok && i < len; i++)
			ok = is_id_char((unsigned char)v[i]);
		if (ok) {
			memcpy(h->request_id, v, len);
			h->request_id[len] = '\0';
		}
	}
	return 0;
}

ssize_t lg_client_parse_head(const char *p, size_t n, struct lg_client_head *h, struct lg_err **err)
{
	size_t lim = n < LG_CLIENT_MAX_HEAD ? n : LG_CLIENT_MAX_HEAD;
	const char *end = memmem(p, lim, "\r\n\r\n", 4), *line, *stop, *eol;
	unsigned fields = 0;
	bool saw_te = false;

	memset(h, 0, sizeof(*h));
	if (end == NULL) {
		if (n >= LG_CLIENT_MAX_HEAD)
			return lg_err_msg(err, EBADMSG,
					  "malformed reply from the service: its head is over %u "
					  "bytes",
					  LG_CLIENT_MAX_HEAD);
		return 0;
	}
	/* Every line of the head ends in the CRLF found first from its start; stop is past the
	 * last. */
	stop = end + 2;
	eol = memmem(p, (size_t)(stop - p), "\r\n", 2);
	if (parse_status_line(p, (size_t)(eol - p), h, err) < 0)
		return -EBADMSG;
	for (line = eol + 2; line < stop; line = eol + 2) {
		eol = memmem(line, (size_t)(stop - line), "\r\n", 2);
		if (++fields > LG_CLIENT_MAX_FIELDS)
			return bad_head(err, "too many header fields");
		if (parse_field(line, (size_t)(eol - line), h, &saw_te, err) < 0)
			return -EBADMSG;
	}
	if (h->chunked && h->has_length)
		return bad_head(err, "both Content-Length and Transfer-Encoding");
	return (ssize_t)(end + 4 - p);
}

/* ---- the body ---- */

void lg_client_body_init(struct lg_client_body *b, const struct lg_client_head *h)
{
	memset(b, 0, sizeof(*b));
	b->state = CH_SIZE;
	if (h->status == 204 || h->status == 304) {
		b->mode = BODY_NONE;
		b->done = true;
	} else if (h->chunked) {
		b->mode = BODY_CHUNKED;
	} else if (h->has_length) {
		b->mode = BODY_LENGTH;
		b->left = h->content_length;
		b->done = b->left == 0;
	} else {
		b->mode = BODY_EOF;
	}
}

static int bad_chunk(struct lg_err **err, const char *what)
{
	return lg_err_msg(err, EBADMSG, "malformed chunked reply from the service: %s", what);
}

/* One byte of the chunked framing outside chunk data. */
static int chunk_byte(struct lg_client_body *b, unsigned char c, struct lg_err **err)
{
	int d;

	switch (b->state) {
	case CH_SIZE:
		d = lg_hex_digit(c);
		if (d >= 0) {
			if (++b->digits > 16)
				return bad_chunk(err, "chunk size too large");
			b->left = b->left << 4 | (uint64_t)d;
			b->line++;
		} else if (b->digits == 0) {
			return bad_chunk(err, "no chunk size");
		} else if (c == ';') {
			b->state = CH_EXT;
		} else if (c == '\r') {
			b->state = CH_SIZE_LF;
		} else {
			return bad_chunk(err, "bad chunk size");
		}
		return 0;
	case CH_EXT:
		if (++b->line > LG_CLIENT_MAX_CHUNK_LINE)
			return bad_chunk(err, "chunk extension too long");
		if (c == '\r')
			b->state = CH_SIZE_LF;
		else if (!is_field_char(c))
			return bad_chunk(err, "control character in a chunk extension");
		return 0;
	case CH_SIZE_LF:
		if (c != '\n')
			return bad_chunk(err, "CR without LF");
		b->digits = 0;
		b->line = 0;
		b->state = b->left == 0 ? CH_TRAILER : CH_DATA;
		return 0;
	case CH_DATA_CR:
		if (c != '\r')
			return bad_chunk(err, "chunk longer than its size");
		b->state = CH_DATA_LF;
		return 0;
	case CH_DATA_LF:
		if (c != '\n')
			return bad_chunk(err, "CR without LF");
		b->state = CH_SIZE;
		return 0;
	case CH_TRAILER:
		if (c == '\r') {
			b->state = CH_END_LF;
			return 0;
		}
		if (!is_tchar(c))
			return bad_chunk(err, "bad trailer field");
		b->state = CH_TRAILER_LINE;
		/* The field's first byte counts toward the bound too. */
		__attribute__((fallthrough));
	case CH_TRAILER_LINE:
		if (++b->trailers > LG_CLIENT_MAX_TRAILER)
			return bad_chunk(err, "trailer fields too long");
		if (c == '\r')
			b->state = CH_TRAILER_LF;
		else if (!is_field_char(c))
			return bad_chunk(err, "control character in a trailer field");
		return 0;
	case CH_TRAILER_LF:
		if (c != '\n')
			return bad_chunk(err, "CR without LF");
		b->state = CH_TRAILER;
		return 0;
	case CH_END_LF:
		if (c != '\n')
			return bad_chunk(err, "CR without LF");
		b->done = true;
		return 0;
	default:
		return bad_chunk(err, "internal state");
	}
}

ssize_t lg_client_body_feed(struct lg_client_body *b, const uint8_t *in, size_t n,
			    lg_client_sink sink, void *ctx, struct lg_err **err)
{
	size_t i = 0, take;
	int r;

	while (i < n && !b->done) {
		switch (b->mode) {
		case BODY_EOF:
			take = n - i;
			break;
		case BODY_LENGTH:
			take = b->left < n - i ? (size_t)b->left : n - i;
			break;
		case BODY_CHUNKED:
			if (b->state != CH_DATA) {
				r = chunk_byte(b, in[i], err);
				if (r < 0)
					return r;
				i++;
				continue;
			}
			take = b->left < n - i ? (size_t)b->left : n - i;
			break;
		default:
			b->done = true;
			continue;
		}
		r = sink(ctx, in + i, take, err);
		if (r < 0)
			return r;
		i += take;
		if (b->mode != BODY_EOF) {
			b->left -= take;
			if (b->left == 0) {
				if (b->mode == BODY_LENGTH)
					b->done = true;
				else
					b->state = CH_DATA_CR;
			}
		}
	}
	return (ssize_t)i;
}

int lg_client_body_eof(const struct lg_client_body *b, struct lg_err **err)
{
	if (b->done || b->mode == BODY_EOF)
		return 0;
	return lg_err_msg(err, EBADMSG, "the service's reply was cut short");
}

/* ---- NDJSON ---- */

static int one_line(struct lg_client_lines *l, const char *s, size_t len, struct lg_err **err)
{
	json_error_t jerr;
	json_t *obj;
	size_t i;
	int r;

	if (len > 0 && s[len - 1] == '\r')
		len--;
	for (i = 0; i < len && (s[i] == ' ' || s[i] == '\t'); i++)
		;
	if (i == len)
		return 0;
	obj = json_loadb(s, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
	if (obj == NULL)
		return lg_err_msg(err, EBADMSG, "a line of the service's stream is not JSON: %s",
				  jerr.text);
	if (!json_is_object(obj)) {
		json_decref(obj);
		return lg_err_msg(err, EBADMSG,
				  "a line of the service's stream is not a JSON object");
	}
	r = l->on_line(l->ctx, obj, err);
	json_decref(obj);
	return r < 0 ? r : 0;
}

int lg_client_lines_feed(void *lines, const uint8_t *p, size_t n, struct lg_err **err)
{
	struct lg_client_lines *l = lines;

	while (n > 0) {
		const uint8_t *nl = memchr(p, '\n', n);
		size_t take = nl != NULL ? (size_t)(nl - p) : n;
		int r;

		if (take > LG_CLIENT_MAX_LINE - l->len)
			return lg_err_msg(err, EBADMSG,
					  "a line of the service's stream is over %u MiB",
					  LG_CLIENT_MAX_LINE >> 20);
		if (nl != NULL && l->len == 0) {
			/* A whole line in this piece: parse it where it is. */
			r = one_line(l, (const char *)p, take, err);
		} else {
			if (l->len + take > l->cap) {
				size_t cap = l->cap ? l->cap : 4096;

				while (cap < l->len + take)
					cap *= 2;
				l->buf = xrealloc(l->buf, cap);
				l->cap = cap;
			}
			memcpy(l->buf + l->len, p, take);
			l->len += take;
			r = 0;
			if (nl != NULL) {
				r = one_line(l, l->buf, l->len, err);
				l->len = 0;
			}
		}
		if (r < 0)
			return r;
		if (nl == NULL)
			break;
		p += take + 1;
		n -= take + 1;
	}
	return 0;
}

int lg_client_lines_end(struct lg_client_lines *l, struct lg_err **err)
{
	if (l->len != 0)
		return lg_err_msg(err, EBADMSG, "the service's stream ended inside a line");
	return 0;
}

void lg_client_lines_clear(struct lg_client_lines *l)
{
	free(l->buf);
	l->buf = NULL;
	l->len = l->cap = 0;
}

/* ---- text for a terminal ---- */

char *lg_client_printable(const char *s, size_t max)
{
	size_t n = strlen(s), len, o = 0;
	cleanup_free char *clean = lg_utf8_sanitize((const uint8_t *)s, n, &len);
	char *out = xmalloc(len + 1);

	for (size_t i = 0; i < len && o < max; i++) {
		unsigned char c = (unsigned char)clean[i];

		if (c < 0x20 || c == 0x7f) {
			out[o++] = '?';
		} else if (c == 0xc2 && i + 1 < len && (unsigned char)clean[i + 1] < 0xa0) {
			/* U+0080..U+009F: C1 controls (CSI among them) in UTF-8. */
			out[o++] = '?';
			i++;
		} else {
			/* Never cut a character in two. */
			size_t cl = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;

			if (o + cl > max || i + cl > len)
				break;
			memcpy(out + o, clean + i, cl);
			o += cl;
			i += cl - 1;
		}
	}
	out[o] = '\0';
	return out;
}

char *lg_client_error_text(const struct lg_client_resp *r)
{
	json_t *e = r->json != NULL ? json_object_get(r->json, "error") : NULL;

	if (json_is_string(e) && json_string_value(e)[0] != '\0')
		return lg_client_printable(json_string_value(e), 512);
	return xasprintf("HTTP %d from the service", r->status);
}

/* ---- I/O ---- */

int lg_client_connect(const char *path, int timeout_ms, int *fd, struct lg_err **err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
	struct timeval none = {0};
	cleanup_close int s = -1;

	if (strlen(path) >= sizeof(sa.sun_path))
		return lg_err_msg(err, ENAMETOOLONG, "the service socket path %s is too long",
				  path);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return lg_err_sys(err, "socket");
	/*
	 * A unix-socket connect waits (blocking) for room in the listener's
	 * backlog, bounded by SO_SNDTIMEO; a non-blocking one would fail at
	 * once with EAGAIN, with nothing to poll for.
	 */
	if (timeout_ms > 0 && setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
		return lg_err_sys(err, "setsockopt SO_SNDTIMEO");
	while (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (errno == EINTR)
			continue;
		if (errno == ENOENT)
			return lg_err_msg(err, ENOENT, "no service socket at %s", path);
		if (errno == ECONNREFUSED)
			return lg_err_msg(err, ECONNREFUSED,
					  "no service listens on %s (a stale socket)", path);
		if (errno == EAGAIN || errno == EINPROGRESS)
			return lg_err_msg(err, ETIMEDOUT,
					  "the service at %s did not take the connection within "
					  "%d ms",
					  path, timeout_ms);
		return lg_err_sys(err, "connect %s", path);
	}
	if (setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof(none)) < 0 ||
	    lg_set_nonblock(s, true) < 0)
		return lg_err_sys(err, "socket options");
	*fd = steal_fd(&s);
	return 0;
}

/* One exchange's waiting: its deadline, and what a cancel does. */
struct io {
	int fd;
	int cancel_fd; /* -1 once it fired under a grace period */
	uint64_t deadline;
	int grace_ms;
	bool interrupted;
};

/*
 * Waits until fd is ready for events.  cancel_fd readable: -EINTR, or with
 * a grace period, a shorter deadline and no more watching it.  Past the
 * deadline: -ETIMEDOUT (-EINTR once interrupted).
 */
static int wait_fd(struct io *io, short events, struct lg_err **err)
{
	for (;;) {
		struct pollfd p[2] = {{.fd = io->fd, .events = events},
				      {.fd = io->cancel_fd, .events = POLLIN}};
		int timeout = -1, r;

		if (io->deadline != 0) {
			uint64_t now = lg_now_ms();

			if (now >= io->deadline)
				return io->interrupted
					   ? lg_err_msg(err, EINTR, "interrupted")
					   : lg_err_msg(err, ETIMEDOUT,
							"the service did not answer in time");
			timeout = (int)(io->deadline - now);
		}
		r = poll(p, io->cancel_fd >= 0 ? 2 : 1, timeout);
		if (r < 0 && errno == EINTR)
			continue; /* a signal: its handler made cancel_fd readable */
		if (r < 0)
			return lg_err_sys(err, "poll");
		if (io->cancel_fd >= 0 && (p[1].revents & POLLIN)) {
			uint64_t end = lg_now_ms() + (uint64_t)io->grace_ms;

			if (io->grace_ms <= 0)
				return lg_err_msg(err, EINTR, "interrupted");
			io->interrupted = true;
			io->cancel_fd = -1;
			if (io->deadline == 0 || end < io->deadline)
				io->deadline = end;
			continue;
		}
		if (p[0].revents != 0)
			return 0;
	}
}

static int send_all(struct io *io, const char *p, size_t n, struct lg_err **err)
{
	while (n > 0) {
		ssize_t w = send(io->fd, p, n, MSG_NOSIGNAL);
		int r;

		if (w > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno != EAGAIN)
			return lg_err_sys(err, "sending to the service");
		r = wait_fd(io, POLLOUT, err);
		if (r < 0)
			return r;
	}
	return 0;
}

static bool target_ok(const char *s)
{
	if (s[0] != '/')
		return false;
	for (; *s != '\0'; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
			return false;
	return true;
}

struct collect {
	char *buf;
	size_t len, cap;
};

static int collect_sink(void *ctx, const uint8_t *p, size_t n, struct lg_err **err)
{
	struct collect *c = ctx;

	if (n > LG_CLIENT_MAX_BODY - c->len)
		return lg_err_msg(err, EMSGSIZE, "the service's reply is over %u MiB",
				  LG_CLIENT_MAX_BODY >> 20);
	if (c->len + n + 1 > c->cap) {
		size_t cap = c->cap ? c->cap : 4096;

		while (cap < c->len + n + 1)
			cap *= 2;
		c->buf = xrealloc(c->buf, cap);
		c->cap = cap;
	}
	memcpy(c->buf + c->len, p, n);
	c->len += n;
	return 0;
}

/* Reads one piece of the reply into buf; 0 at EOF. */
static ssize_t recv_some(struct io *io, uint8_t *buf, size_t len, struct lg_err **err)
{
	for (;;) {
		ssize_t r = recv(io->fd, buf, len, 0);
		int w;

		if (r >= 0)
			return r;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return lg_err_sys(err, "reading from the service");
		w = wait_fd(io, POLLIN, err);
		if (w < 0)
			return w;
	}
}

/*
 * After a complete reply, waits (briefly) for the service to close: with
 * Connection: close it does at once, and a client that hangs up first
 * makes the reply look cut short in the service's log.  What it sends
 * meanwhile is not ours to read.
 */
static void drain(struct io *io, uint8_t *buf, size_t len)
{
	uint64_t end = lg_now_ms() + DRAIN_MS;

	if (io->deadline == 0 || end < io->deadline)
		io->deadline = end;
	io->cancel_fd = -1;
	while (recv_some(io, buf, len, NULL) > 0)
		;
}

int lg_client_do(int fd, const struct lg_client_req *rq, struct lg_client_resp *resp,
		 struct lg_err **err)
{
	/* Closed on every return: one request per connection. */
	cleanup_close int s = fd;
	struct io io = {.fd = s,
			.cancel_fd = rq->cancel_fd,
			.deadline = rq->timeout_ms > 0 ? lg_now_ms() + (uint64_t)rq->timeout_ms : 0,
			.grace_ms = rq->grace_ms};
	cleanup_free char *head = NULL, *idh = NULL;
	struct lg_err *send_err = NULL;
	const size_t bufsz = LG_CLIENT_MAX_HEAD > 65536 ? LG_CLIENT_MAX_HEAD : 65536;
	cleanup_free uint8_t *buf = xmalloc(bufsz);
	struct collect col = {0};
	struct lg_client_lines lines = {.on_line = rq->on_line, .ctx = rq->ctx};
	struct lg_client_head h;
	struct lg_client_body b;
	lg_client_sink sink = collect_sink;
	void *sink_ctx = &col;
	size_t have = 0;
	ssize_t hl = 0, r;
	bool streamed = false;

	memset(resp, 0, sizeof(*resp));
	if (!target_ok(rq->target))
		return lg_err_msg(err, EINVAL, "bad request target");
	if (rq->request_id != NULL) {
		bool ok = rq->request_id[0] != '\0' && strlen(rq->request_id) <= 64;

		for (const char *c = rq->request_id; ok && *c != '\0'; c++)
			ok = is_id_char((unsigned char)*c);
		if (ok)
			idh = xasprintf("X-Request-Id: %s\r\n", rq->request_id);
	}
	head = xasprintf("%s %s HTTP/1.1\r\nHost: localhost\r\nUser-Agent: luminaguard/%s\r\n"
			 "Accept: application/json, application/x-ndjson\r\nConnection: close\r\n"
			 "%s%s%zu\r\n\r\n",
			 rq->method, rq->target, LG_VERSION, idh != NULL ? idh : "",
			 rq->body != NULL ? "Content-Type: application/json\r\nContent-Length: "
					  : "Content-Length: ",
			 rq->body != NULL ? rq->body_len : 0);
	r = send_all(&io, head, strlen(head), &send_err);
	if (r == 0 && rq->body != NULL)
		r = send_all(&io, rq->body, rq->body_len, &send_err);
	/*
	 * A service that refuses a request (413) may answer and close before
	 * reading all of it: the answer is still there to read.
	 */
	if (r < 0 && r != -EPIPE && r != -ECONNRESET) {
		*err = steal_pointer(&send_err);
		return (int)r;
	}
	lg_err_free(&send_err);

	/* The head: read into buf until it parses (it fits, or it is refused). */
	while (hl == 0) {
		r = recv_some(&io, buf + have, bufsz - have, err);
		if (r < 0)
			return (int)r;
		if (r == 0)
			return lg_err_msg(err, EPIPE,
					  have == 0 ? "the service closed the connection without "
						      "answering"
						    : "the service's reply was cut short");
		have += (size_t)r;
		hl = lg_client_parse_head((const char *)buf, have, &h, err);
		if (hl < 0)
			return (int)hl;
	}
	resp->status = h.status;
	resp->interrupted = io.interrupted;
	memcpy(resp->request_id, h.request_id, sizeof(resp->request_id));
	if (rq->on_line != NULL && h.status / 100 == 2 && h.ndjson) {
		sink = lg_client_lines_feed;
		sink_ctx = &lines;
		streamed = true;
	}
	lg_client_body_init(&b, &h);
	r = lg_client_body_feed(&b, buf + hl, have - (size_t)hl, sink, sink_ctx, err);
	while (r >= 0 && !b.done) {
		r = recv_some(&io, buf, bufsz, err);
		if (r == 0) {
			r = lg_client_body_eof(&b, err);
			break;
		}
		if (r > 0)
			r = lg_client_body_feed(&b, buf, (size_t)r, sink, sink_ctx, err);
	}
	if (r >= 0 && streamed)
		r = lg_client_lines_end(&lines, err);
	lg_client_lines_clear(&lines);
	if (r >= 0 && b.mode != BODY_EOF)
		drain(&io, buf, bufsz);
	if (r < 0) {
		free(col.buf);
		return (int)r;
	}
	if (!streamed) {
		collect_sink(&col, (const uint8_t *)"", 0, NULL); /* room for the NUL */
		col.buf[col.len] = '\0';
		resp->body = col.buf;
		resp->body_len = col.len;
		resp->json = json_loadb(col.buf, col.len, JSON_REJECT_DUPLICATES, NULL);
	}
	resp->interrupted = io.interrupted;
	return 0;
}

int lg_client_call(const char *sock_path, const struct lg_client_req *rq,
		   struct lg_client_resp *resp, struct lg_err **err)
{
	int fd, r;

	memset(resp, 0, sizeof(*resp));
	r = lg_client_connect(sock_path, LG_CLIENT_CONNECT_MS, &fd, err);
	if (r < 0)
		return r;
	return lg_client_do(fd, rq, resp, err);
}

void lg_client_resp_clear(struct lg_client_resp *r)
{
	free(r->body);
	json_decref(r->json);
	memset(r, 0, sizeof(*r));
}
