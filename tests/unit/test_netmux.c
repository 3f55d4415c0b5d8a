/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the net port mux.  The test plays the guest on the other
 * end of a socketpair, speaking frames, with the real egress proxy behind
 * the mux and a local echo server as the destination (allowed by an
 * explicit 127.0.0.1:PORT entry).  The last test puts the real guest
 * forwarder (lg-agent --netfwd-fd) in front and drives a TCP client
 * through forwarder -> mux -> egress -> echo server.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "common/util.h"
#include "net/egress.h"
#include "net/netmux.h"
#include "proto/proto.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define WINDOW	(256u * 1024u) /* the mux's window (net/netstream.h) */
#define CHUNK	LG_DATA_CHUNK
#define NSTREAM 8

/* ---- a local echo server ---- */

struct echo {
	int lfd;
	uint16_t port;
	pthread_t th;
};

static void *echo_conn(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[16384];
	ssize_t n;

	while ((n = read(fd, buf, sizeof(buf))) > 0)
		if (lg_write_all(fd, buf, (size_t)n) < 0)
			break;
	shutdown(fd, SHUT_WR);
	close(fd);
	return NULL;
}

static void *echo_accept(void *arg)
{
	struct echo *e = arg;

	for (;;) {
		int fd = accept4(e->lfd, NULL, NULL, SOCK_CLOEXEC);
		pthread_t th;

		if (fd < 0)
			return NULL;
		if (pthread_create(&th, NULL, echo_conn, (void *)(intptr_t)fd) != 0) {
			close(fd);
			continue;
		}
		pthread_detach(th);
	}
}

static void echo_start(struct echo *e)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	e->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(e->lfd >= 0);
	assert_int_equal(bind(e->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(e->lfd, 64), 0);
	assert_int_equal(getsockname(e->lfd, (struct sockaddr *)&sa, &len), 0);
	e->port = ntohs(sa.sin_port);
	assert_int_equal(pthread_create(&e->th, NULL, echo_accept, e), 0);
}

static void echo_stop(struct echo *e)
{
	shutdown(e->lfd, SHUT_RDWR);
	pthread_join(e->th, NULL);
	close(e->lfd);
}

/* ---- the proxy and the mux ---- */

struct ask_gate {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool asked, release;
};

static bool ask_blocking(void *ctx, const char *host, uint16_t port)
{
	struct ask_gate *g = ctx;

	pthread_mutex_lock(&g->lock);
	g->asked = true;
	pthread_cond_broadcast(&g->cond);
	while (!g->release)
		pthread_cond_wait(&g->cond, &g->lock);
	pthread_mutex_unlock(&g->lock);
	return false;
}

static void gate_release(struct ask_gate *g)
{
	pthread_mutex_lock(&g->lock);
	g->release = true;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
}

struct fx {
	struct echo echo;
	struct lg_allowlist *al;
	struct lg_egress eg;
	struct ask_gate gate;
	struct lg_netmux *mux;
	int gfd; /* the guest's end of the port */
	int fds_before;
	/* the guest's view */
	struct lg_reader rd;
	bool port_eof;
	struct gstream {
		struct lg_buf in;
		bool eof, closed, noack;
		uint32_t inflight;
	} st[NSTREAM];
};

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the DIR's own */
}

/* Threads (echo connections, egress) close their fds a moment after the peer: wait for it. */
static void assert_fds_back(int before)
{
	int now = 0;

	for (int i = 0; i < 200; i++) {
		now = count_fds();
		if (now == before)
			return;
		usleep(10000);
	}
	fail_msg("fd leak: %d open before, %d after", before, now);
}

/* eg NULL: a mux with no way out until lg_netmux_set_egress. */
static void mux_start_with(struct fx *f, struct lg_egress *eg)
{
	struct lg_err *err = NULL;
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	f->gfd = sv[0];
	assert_int_equal(lg_netmux_start(sv[1], eg, &f->mux, &err), 0);
	lg_reader_init(&f->rd);
	f->port_eof = false;
	for (int i = 0; i < NSTREAM; i++)
		f->st[i] = (struct gstream){0};
}

static void mux_start(struct fx *f)
{
	mux_start_with(f, &f->eg);
}

static void mux_stop(struct fx *f)
{
	lg_netmux_stop(f->mux);
	f->mux = NULL;
	close(f->gfd);
	lg_reader_free(&f->rd);
	for (int i = 0; i < NSTREAM; i++)
		lg_buf_free(&f->st[i].in);
}

static int setup(void **state)
{
	struct fx *f = xzalloc(sizeof(*f));
	struct lg_err *err = NULL;
	char *spec;

	signal(SIGPIPE, SIG_IGN);
	f->fds_before = count_fds();
	echo_start(&f->echo);
	spec = xasprintf("127.0.0.1:%u", f->echo.port);
	if (lg_allowlist_parse(spec, &f->al, &err) < 0) {
		fprintf(stderr, "allowlist %s: %s\n", spec, err->msg);
		return -1;
	}
	free(spec);
	lg_egress_init(&f->eg, f->al);
	pthread_mutex_init(&f->gate.lock, NULL);
	pthread_cond_init(&f->gate.cond, NULL);
	f->eg.ask = ask_blocking;
	f->eg.ask_ctx = &f->gate;
	f->eg.connect_timeout_ms = 2000;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	/* A failed test may leave a proxy thread waiting for a human. */
	gate_release(&f->gate);
	if (f->mux != NULL)
		mux_stop(f);
	lg_egress_fini(&f->eg);
	lg_allowlist_free(f->al);
	echo_stop(&f->echo);
	pthread_cond_destroy(&f->gate.cond);
	pthread_mutex_destroy(&f->gate.lock);
	assert_fds_back(f->fds_before);
	free(f);
	return 0;
}

/* ---- the guest side ---- */

static void g_frame(struct fx *f, uint16_t type, uint32_t id, const void *p, size_t n)
{
	struct lg_buf b = {0};

	lg_frame_data(&b, type, id, p, n);
	/* After the mux ended the write fails (EPIPE): the test then sees the EOF. */
	if (lg_write_all(f->gfd, lg_buf_head(&b), lg_buf_pending(&b)) < 0)
		assert_true(errno == EPIPE || errno == ECONNRESET);
	lg_buf_free(&b);
}

static void g_ack(struct fx *f, uint32_t id, uint32_t n)
{
	uint8_t le[4];

	lg_put_le32(le, n);
	g_frame(f, LG_MSG_NET_ACK, id, le, sizeof(le));
}

static int g_on_frame(void *ctx, const struct lg_frame_hdr *h, const uint8_t *p)
{
	struct fx *f = ctx;
	struct gstream *s;

	assert_true(h->id > 0 && h->id < NSTREAM);
	s = &f->st[h->id];
	switch (h->type) {
	case LG_MSG_NET_DATA:
		assert_false(s->eof);
		assert_true(h->len > 0 && h->len <= CHUNK);
		lg_buf_append(&s->in, p, h->len);
		if (!s->noack)
			g_ack(f, h->id, h->len);
		break;
	case LG_MSG_NET_EOF:
		s->eof = true;
		break;
	case LG_MSG_NET_CLOSE:
		s->closed = true;
		break;
	case LG_MSG_NET_ACK:
		assert_int_equal(h->len, 4);
		assert_true(lg_get_le32(p) <= s->inflight);
		s->inflight -= lg_get_le32(p);
		break;
	default:
		fail_msg("unexpected %s from the mux", lg_msg_name(h->type));
	}
	return 0;
}

/* Takes what the mux sent within timeout_ms; false once the port closed. */
static bool g_pump(struct fx *f, int timeout_ms)
{
	struct pollfd pfd = {.fd = f->gfd, .events = POLLIN};
	uint8_t buf[65536];
	ssize_t n;

	if (f->port_eof)
		return false;
	if (poll(&pfd, 1, timeout_ms) <= 0)
		return true;
	n = read(f->gfd, buf, sizeof(buf));
	if (n <= 0) {
		f->port_eof = true;
		return false;
	}
	assert_int_equal(lg_reader_feed(&f->rd, buf, (size_t)n, g_on_frame, f), 0);
	return true;
}

#define WAIT_FOR(f, cond, ms)                                                                      \
	do {                                                                                       \
		uint64_t until_ = lg_now_ms() + (ms);                                              \
		while (!(cond) && lg_now_ms() < until_)                                            \
			g_pump((f), 20);                                                           \
		assert_true(cond);                                                                 \
	} while (0)

/* Sends within the window, waiting for credit. */
static void g_send(struct fx *f, uint32_t id, const uint8_t *p, size_t n)
{
	struct gstream *s = &f->st[id];

	while (n > 0) {
		size_t c = n < CHUNK ? n : CHUNK;

		WAIT_FOR(f, s->inflight + c <= WINDOW, 10000);
		g_frame(f, LG_MSG_NET_DATA, id, p, c);
		s->inflight += (uint32_t)c;
		p += c;
		n -= c;
	}
}

static bool has_head(const struct gstream *s)
{
	return lg_buf_pending(&s->in) > 0 &&
	       memmem(lg_buf_head(&s->in), lg_buf_pending(&s->in), "\r\n\r\n", 4) != NULL;
}

/* Opens stream id and CONNECTs it to the echo server. */
static void g_connect(struct fx *f, uint32_t id)
{
	char *req = xasprintf("CONNECT 127.0.0.1:%u HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n\r\n",
			      f->echo.port, f->echo.port);
	struct gstream *s = &f->st[id];
	const char *line;

	g_frame(f, LG_MSG_NET_OPEN, id, NULL, 0);
	g_send(f, id, (const uint8_t *)req, strlen(req));
	free(req);
	WAIT_FOR(f, has_head(s) || s->closed || s->eof, 10000);
	lg_buf_append(&s->in, "", 1);
	line = (const char *)lg_buf_head(&s->in);
	if (strncmp(line, "HTTP/1.1 200", 12) != 0 && strncmp(line, "HTTP/1.0 200", 12) != 0)
		fail_msg("CONNECT through the mux: %s", line);
	lg_buf_consume(&s->in, lg_buf_pending(&s->in));
}

static uint8_t *pattern(size_t n, unsigned seed)
{
	uint8_t *p = xmalloc(n);

	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(i * 131 + seed * 7 + (i >> 9));
	return p;
}

/* ---- tests ---- */

/* Three streams side by side, more than a window each way, then half close. */
static void test_three_streams(void **state)
{
	struct fx *f = *state;
	const size_t n = 3 * WINDOW / 2 + 777;
	uint8_t *data[4];

	mux_start(f);
	for (uint32_t id = 1; id <= 3; id++) {
		g_connect(f, id);
		data[id] = pattern(n, id);
	}
	/* Interleaved, window by window. */
	for (size_t off = 0; off < n; off += CHUNK)
		for (uint32_t id = 1; id <= 3; id++)
			g_send(f, id, data[id] + off, n - off < CHUNK ? n - off : CHUNK);
	for (uint32_t id = 1; id <= 3; id++)
		g_frame(f, LG_MSG_NET_EOF, id, NULL, 0);
	WAIT_FOR(f, f->st[1].eof && f->st[2].eof && f->st[3].eof, 20000);
	for (uint32_t id = 1; id <= 3; id++) {
		assert_false(f->st[id].closed);
		assert_int_equal(lg_buf_pending(&f->st[id].in), n);
		assert_memory_equal(lg_buf_head(&f->st[id].in), data[id], n);
		free(data[id]);
	}
	/* Both halves done: the mux forgot them; a late ACK is dropped, not an error. */
	g_ack(f, 1, 1);
	g_pump(f, 100);
	assert_false(f->port_eof);
	mux_stop(f);
}

/* A stream whose guest side does not ACK stops at the window; the others go on. */
static void test_stalled_stream(void **state)
{
	struct fx *f = *state;
	const size_t big = 4 * WINDOW;
	uint8_t *data = pattern(big, 9);
	uint8_t small[10000];
	size_t sent = 0;

	memset(small, 'x', sizeof(small));
	mux_start(f);
	g_connect(f, 1);
	g_connect(f, 2);
	f->st[1].noack = true;
	/* Push what the window lets through until the echo path backs up. */
	for (uint64_t until = lg_now_ms() + 2000; lg_now_ms() < until && sent < big;) {
		size_t c = big - sent < CHUNK ? big - sent : CHUNK;

		if (f->st[1].inflight + c > WINDOW) {
			g_pump(f, 20);
			continue;
		}
		g_frame(f, LG_MSG_NET_DATA, 1, data + sent, c);
		f->st[1].inflight += (uint32_t)c;
		sent += c;
	}
	for (int i = 0; i < 20; i++)
		g_pump(f, 10);
	/* The mux never sends past the window. */
	assert_true(lg_buf_pending(&f->st[1].in) <= WINDOW);
	assert_int_equal(lg_buf_pending(&f->st[1].in), WINDOW);

	g_send(f, 2, small, sizeof(small));
	WAIT_FOR(f, lg_buf_pending(&f->st[2].in) == sizeof(small), 5000);
	assert_memory_equal(lg_buf_head(&f->st[2].in), small, sizeof(small));

	/* Credit again: the stalled stream catches up. */
	f->st[1].noack = false;
	g_ack(f, 1, (uint32_t)lg_buf_pending(&f->st[1].in));
	g_send(f, 1, data + sent, big - sent);
	WAIT_FOR(f, lg_buf_pending(&f->st[1].in) == big, 20000);
	assert_memory_equal(lg_buf_head(&f->st[1].in), data, big);
	free(data);
	mux_stop(f);
}

/* What a misbehaving guest sends: each one must end the mux and close the port. */
enum violation {
	V_UNKNOWN_STREAM,
	V_WRONG_TYPE,
	V_OVERSIZED,
	V_GARBAGE,
	V_BIG_DATA,
	V_BAD_ACK,
	V_DUP_OPEN,
	V_DATA_AFTER_EOF,
	V_WINDOW,
	V_COUNT,
};

static void violate(struct fx *f, enum violation v)
{
	uint8_t raw[LG_FRAME_HDR_SIZE];
	uint8_t *big;

	switch (v) {
	case V_UNKNOWN_STREAM:
		g_frame(f, LG_MSG_NET_DATA, 7, "x", 1);
		break;
	case V_WRONG_TYPE:
		g_frame(f, LG_MSG_EXEC, 1, NULL, 0);
		break;
	case V_OVERSIZED:
		lg_put_le32(raw, LG_FRAME_MAX_PAYLOAD + 1);
		lg_put_le16(raw + 4, LG_MSG_NET_DATA);
		lg_put_le16(raw + 6, 0);
		lg_put_le32(raw + 8, 1);
		assert_int_equal(lg_write_all(f->gfd, raw, sizeof(raw)), sizeof(raw));
		break;
	case V_GARBAGE:
		memset(raw, 0xa5, sizeof(raw));
		assert_int_equal(lg_write_all(f->gfd, raw, sizeof(raw)), sizeof(raw));
		break;
	case V_BIG_DATA:
		g_frame(f, LG_MSG_NET_OPEN, 1, NULL, 0);
		big = xzalloc(CHUNK + 1);
		g_frame(f, LG_MSG_NET_DATA, 1, big, CHUNK + 1);
		free(big);
		break;
	case V_BAD_ACK:
		g_frame(f, LG_MSG_NET_OPEN, 1, NULL, 0);
		g_ack(f, 1, 1); /* nothing was sent on it */
		break;
	case V_DUP_OPEN:
		g_frame(f, LG_MSG_NET_OPEN, 3, NULL, 0);
		g_frame(f, LG_MSG_NET_OPEN, 3, NULL, 0);
		break;
	case V_DATA_AFTER_EOF:
		g_frame(f, LG_MSG_NET_OPEN, 1, NULL, 0);
		g_frame(f, LG_MSG_NET_EOF, 1, NULL, 0);
		g_frame(f, LG_MSG_NET_DATA, 1, "x", 1);
		break;
	case V_WINDOW: {
		/*
		 * A destination off the allowlist: the proxy waits in ask()
		 * and reads nothing more, so the mux cannot pass the bytes on
		 * and must not take more than a window of them.  (A public
		 * address: one on the host's loopback is refused before anyone
		 * is asked, and is never dialled here either.)
		 */
		const char *req =
		    "CONNECT 93.184.216.34:9 HTTP/1.1\r\nHost: 93.184.216.34:9\r\n\r\n";
		uint8_t *chunk = xzalloc(CHUNK);

		g_frame(f, LG_MSG_NET_OPEN, 1, NULL, 0);
		g_frame(f, LG_MSG_NET_DATA, 1, req, strlen(req));
		f->st[1].inflight += (uint32_t)strlen(req);
		pthread_mutex_lock(&f->gate.lock);
		while (!f->gate.asked)
			pthread_cond_wait(&f->gate.cond, &f->gate.lock);
		pthread_mutex_unlock(&f->gate.lock);
		/* Ignore the credit: a socketpair's buffer plus one window is far below 8 MiB. */
		for (int i = 0; i < 128 && !f->port_eof; i++) {
			g_frame(f, LG_MSG_NET_DATA, 1, chunk, CHUNK);
			f->st[1].inflight += CHUNK;
			g_pump(f, 0);
		}
		free(chunk);
		break;
	}
	case V_COUNT:
		break;
	}
}

static void test_violations(void **state)
{
	struct fx *f = *state;

	for (int v = 0; v < V_COUNT; v++) {
		uint64_t t0;

		mux_start(f);
		violate(f, v);
		t0 = lg_now_ms();
		while (g_pump(f, 100) && lg_now_ms() - t0 < 5000)
			;
		if (!f->port_eof)
			fail_msg("violation %d: the mux did not close the port", v);
		if (v == V_WINDOW)
			gate_release(&f->gate);
		mux_stop(f);
	}
}

/* Stopping with streams open and bytes in flight returns at once and leaks nothing. */
static void test_stop_with_streams(void **state)
{
	struct fx *f = *state;
	uint8_t *data = pattern(WINDOW, 3);
	uint64_t t0;

	mux_start(f);
	for (uint32_t id = 1; id <= 4; id++) {
		g_connect(f, id);
		f->st[id].noack = true;
		g_send(f, id, data, WINDOW);
	}
	g_frame(f, LG_MSG_NET_OPEN, 5, NULL, 0); /* and one still reading its request */
	g_pump(f, 50);
	t0 = lg_now_ms();
	lg_netmux_stop(f->mux);
	assert_true(lg_now_ms() - t0 < 2000);
	f->mux = NULL;
	WAIT_FOR(f, f->port_eof, 2000);
	free(data);
	mux_stop(f);
}

/* The stream limit: opens beyond it are refused with NET_CLOSE, the mux goes on. */
static void test_stream_limit(void **state)
{
	struct fx *f = *state;
	uint32_t refused = 0;

	mux_start(f);
	/* Ids above NSTREAM are not tracked by the guest view: count CLOSEs by hand. */
	for (uint32_t id = 1; id <= 70; id++)
		g_frame(f, LG_MSG_NET_OPEN, id, NULL, 0);
	for (uint64_t until = lg_now_ms() + 3000; lg_now_ms() < until && refused < 6;) {
		struct pollfd pfd = {.fd = f->gfd, .events = POLLIN};
		uint8_t hdr[LG_FRAME_HDR_SIZE];
		struct lg_frame_hdr h;

		if (poll(&pfd, 1, 50) <= 0)
			continue;
		assert_int_equal(lg_read_all(f->gfd, hdr, sizeof(hdr)), sizeof(hdr));
		assert_int_equal(lg_frame_hdr_decode(hdr, &h), 0);
		assert_int_equal(h.type, LG_MSG_NET_CLOSE);
		assert_true(h.id > 64);
		refused++;
	}
	assert_int_equal(refused, 6);
	mux_stop(f);
}

/*
 * A mux without egress (a pooled VM's, before its claimer is known)
 * refuses every stream at once and keeps the port; egress attached later
 * serves the streams opened after it, once.
 */
static void test_refused_until_attached(void **state)
{
	struct fx *f = *state;
	uint8_t msg[] = "after the attach";

	mux_start_with(f, NULL);
	g_frame(f, LG_MSG_NET_OPEN, 1, NULL, 0);
	g_frame(f, LG_MSG_NET_OPEN, 2, NULL, 0);
	WAIT_FOR(f, f->st[1].closed && f->st[2].closed, 5000);
	assert_int_equal(lg_buf_pending(&f->st[1].in), 0);
	/* Bytes the guest sent before it saw the refusal are stale, not a violation. */
	g_frame(f, LG_MSG_NET_DATA, 1, "x", 1);
	g_pump(f, 100);
	assert_false(f->port_eof);

	assert_int_equal(lg_netmux_set_egress(f->mux, NULL), -EINVAL);
	assert_int_equal(lg_netmux_set_egress(f->mux, &f->eg), 0);
	assert_int_equal(lg_netmux_set_egress(f->mux, &f->eg), -EBUSY);
	g_connect(f, 3);
	g_send(f, 3, msg, sizeof(msg));
	g_frame(f, LG_MSG_NET_EOF, 3, NULL, 0);
	WAIT_FOR(f, f->st[3].eof, 10000);
	assert_false(f->st[3].closed);
	assert_int_equal(lg_buf_pending(&f->st[3].in), sizeof(msg));
	assert_memory_equal(lg_buf_head(&f->st[3].in), msg, sizeof(msg));
	mux_stop(f);

	/* One started with egress has it for good. */
	mux_start(f);
	assert_int_equal(lg_netmux_set_egress(f->mux, &f->eg), -EBUSY);
	mux_stop(f);
}

/* ---- the guest forwarder in front of the mux ---- */

static uint16_t free_port(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	close(fd);
	return ntohs(sa.sin_port);
}

static int dial(uint16_t port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	int fd;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	for (int i = 0; i < 300; i++) {
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			return fd;
		close(fd);
		usleep(10000); /* the forwarder is still starting */
	}
	fail_msg("cannot connect to the forwarder on port %u", port);
	return -1;
}

struct client {
	uint16_t fwd_port, echo_port;
	size_t n;
	unsigned seed;
	bool ok;
	char msg[200];
};

/* A connection to the forwarder that ends with no byte: read gives EOF (or a reset). */
static bool conn_ends_empty(uint16_t port)
{
	static const char req[] = "CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n";
	struct timeval tv = {.tv_sec = 10};
	char c;
	int fd = dial(port);
	ssize_t n;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (write(fd, req, sizeof(req) - 1) < 0 && errno != EPIPE && errno != ECONNRESET)
		fail_msg("write to the forwarder: %s", strerror(errno));
	n = read(fd, &c, 1);
	close(fd);
	return n == 0 || (n < 0 && errno == ECONNRESET);
}

/* One proxied connection: CONNECT, n bytes each way (written and read concurrently), half close. */
static void *client_main(void *arg)
{
	struct client *c = arg;
	int fd = dial(c->fwd_port);
	char *req = xasprintf("CONNECT 127.0.0.1:%u HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n\r\n",
			      c->echo_port, c->echo_port);
	uint8_t *data = pattern(c->n, c->seed), *got = xmalloc(c->n + 1);
	char head[512];
	size_t hl = 0, wr = 0, rd = 0;

	lg_write_all(fd, req, strlen(req));
	free(req);
	while (hl < sizeof(head) - 1 && (hl < 4 || memcmp(head + hl - 4, "\r\n\r\n", 4) != 0)) {
		if (read(fd, head + hl, 1) != 1)
			break;
		hl++;
	}
	head[hl] = '\0';
	if (strstr(head, " 200 ") == NULL) {
		snprintf(c->msg, sizeof(c->msg), "CONNECT answered: %.150s", head);
		goto out;
	}
	lg_set_nonblock(fd, true);
	while (rd < c->n) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN | (wr < c->n ? POLLOUT : 0)};
		ssize_t k;

		if (poll(&pfd, 1, 10000) <= 0) {
			snprintf(c->msg, sizeof(c->msg), "stalled at %zu written, %zu read", wr,
				 rd);
			goto out;
		}
		if (wr < c->n && (pfd.revents & POLLOUT)) {
			k = write(fd, data + wr, c->n - wr);
			if (k > 0)
				wr += (size_t)k;
			if (wr == c->n)
				shutdown(fd, SHUT_WR);
		}
		if (pfd.revents & (POLLIN | POLLHUP)) {
			k = read(fd, got + rd, c->n + 1 - rd);
			if (k <= 0) {
				snprintf(c->msg, sizeof(c->msg), "early end at %zu read", rd);
				goto out;
			}
			rd += (size_t)k;
		}
	}
	lg_set_nonblock(fd, false);
	if (rd != c->n || memcmp(got, data, c->n) != 0) {
		snprintf(c->msg, sizeof(c->msg), "the echo differs (%zu bytes read)", rd);
		goto out;
	}
	/* After the echo, the server's half close comes through as EOF. */
	if (read(fd, got, 1) != 0) {
		snprintf(c->msg, sizeof(c->msg), "no EOF after the echo");
		goto out;
	}
	c->ok = true;
out:
	free(data);
	free(got);
	close(fd);
	return NULL;
}

static void test_forwarder(void **state)
{
	struct fx *f = *state;
	struct lg_err *err = NULL;
	struct lg_netmux *mux = NULL;
	struct client c[4];
	pthread_t th[4];
	uint16_t port = free_port();
	char fdarg[16], portarg[16];
	int sv[2], st;
	pid_t pid;

	if (access(LG_BUILD_DIR "/lg-agent", X_OK) < 0)
		skip();
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = dup(sv[0]); /* without CLOEXEC */

		snprintf(fdarg, sizeof(fdarg), "%d", fd);
		snprintf(portarg, sizeof(portarg), "%u", port);
		execl(LG_BUILD_DIR "/lg-agent", "lg-agent", "--netfwd-fd", fdarg, "--listen-port",
		      portarg, (char *)NULL);
		_exit(127);
	}
	close(sv[0]);
	assert_int_equal(lg_netmux_start(sv[1], &f->eg, &mux, &err), 0);
	for (int i = 0; i < 4; i++) {
		c[i] = (struct client){.fwd_port = port,
				       .echo_port = f->echo.port,
				       .n = i == 0 ? 3 * 1024 * 1024 : 100000 + (size_t)i,
				       .seed = (unsigned)i};
		assert_int_equal(pthread_create(&th[i], NULL, client_main, &c[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		if (!c[i].ok)
			fail_msg("client %d through the forwarder: %s", i, c[i].msg);
	}
	/* The host closing the port ends the forwarder cleanly. */
	lg_netmux_stop(mux);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

/*
 * The guest's forwarder in front of a mux without egress: its clients'
 * connections end at once; after the attach they go through; when the
 * host closes the port (lg_sandbox_set_net(NULL)) the forwarder exits and
 * its port refuses connections.
 */
static void test_forwarder_late_egress(void **state)
{
	struct fx *f = *state;
	struct lg_err *err = NULL;
	struct lg_netmux *mux = NULL;
	struct client c = {.n = 100000, .seed = 7};
	struct sockaddr_in sa = {.sin_family = AF_INET};
	uint16_t port = free_port();
	char fdarg[16], portarg[16];
	int sv[2], st, fd;
	pthread_t th;
	pid_t pid;

	if (access(LG_BUILD_DIR "/lg-agent", X_OK) < 0)
		skip();
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int cfd = dup(sv[0]); /* without CLOEXEC */

		snprintf(fdarg, sizeof(fdarg), "%d", cfd);
		snprintf(portarg, sizeof(portarg), "%u", port);
		execl(LG_BUILD_DIR "/lg-agent", "lg-agent", "--netfwd-fd", fdarg, "--listen-port",
		      portarg, (char *)NULL);
		_exit(127);
	}
	close(sv[0]);
	assert_int_equal(lg_netmux_start(sv[1], NULL, &mux, &err), 0);
	assert_true(conn_ends_empty(port));
	assert_true(conn_ends_empty(port));

	assert_int_equal(lg_netmux_set_egress(mux, &f->eg), 0);
	c.fwd_port = port;
	c.echo_port = f->echo.port;
	assert_int_equal(pthread_create(&th, NULL, client_main, &c), 0);
	pthread_join(th, NULL);
	if (!c.ok)
		fail_msg("through the forwarder after the attach: %s", c.msg);

	lg_netmux_stop(mux);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	sa.sin_port = htons(port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), -1);
	assert_int_equal(errno, ECONNREFUSED);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_three_streams, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stalled_stream, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_violations, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stop_with_streams, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stream_limit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refused_until_attached, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_forwarder, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_forwarder_late_egress, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
