/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the CLI's client of the service API (src/cli/client.c) and
 * of `run` through the service (src/cli/run_remote.c): the response parser
 * on canned bytes (chunked, split reads, oversize, malformed), requests
 * against a fake server on a socketpair, and run_via_service against a
 * fake service on a unix socket in a temporary LUMINAGUARD_HOME.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "cli/client.h"
#include "cli/run_opts.h"
#include "cli/run_remote.h"
#include "common/env.h"
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* ---- the head ---- */

static ssize_t head(const char *s, struct lg_client_head *h, struct lg_err **err)
{
	return lg_client_parse_head(s, strlen(s), h, err);
}

static void test_head_ok(void **state)
{
	const char *s = "HTTP/1.1 201 Created\r\nContent-Type: application/x-ndjson; x=1\r\n"
			"content-length:  12 \r\nX-Request-Id: run-abc.1_2\r\nX-Other: \x80\t!\r\n"
			"\r\nBODY";
	struct lg_client_head h;
	struct lg_err *err = NULL;

	assert_int_equal(head(s, &h, &err), (ssize_t)strlen(s) - 4);
	assert_null(err);
	assert_int_equal(h.status, 201);
	assert_true(h.has_length);
	assert_int_equal(h.content_length, 12);
	assert_false(h.chunked);
	assert_true(h.ndjson);
	assert_string_equal(h.request_id, "run-abc.1_2");

	/* HTTP/1.0, no reason phrase, chunked, a request id we do not keep. */
	assert_true(head("HTTP/1.0 404\r\nTransfer-Encoding: Chunked\r\nX-Request-Id: a b\r\n"
			 "Content-Type: application/x-ndjsonx\r\n\r\n",
			 &h, &err) > 0);
	assert_int_equal(h.status, 404);
	assert_true(h.chunked);
	assert_false(h.ndjson);
	assert_string_equal(h.request_id, "");
	/* The same Content-Length twice is one. */
	assert_true(head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", &h,
			 &err) > 0);
	assert_null(err);
}

static void test_head_partial(void **state)
{
	const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
	struct lg_client_head h;
	struct lg_err *err = NULL;

	/* Every prefix short of the blank line needs more; then it parses. */
	for (size_t n = 0; n < strlen(s) - 2; n++) {
		ssize_t r = lg_client_parse_head(s, n, &h, &err);

		assert_int_equal(r, n < strlen(s) - 2 ? 0 : (ssize_t)n);
		assert_null(err);
	}
	assert_int_equal(lg_client_parse_head(s, strlen(s), &h, &err), (ssize_t)strlen(s) - 2);
}

static void test_head_malformed(void **state)
{
	static const char *bad[] = {
	    "HTTP/2 200 OK\r\n\r\n",
	    "HTTP/1.1 200OK\r\n\r\n",
	    "HTTP/1.1 2x0 OK\r\n\r\n",
	    "HTTP/1.1 100 Continue\r\n\r\n",
	    "HTTP/1.1 600 Nope\r\n\r\n",
	    "HTTP/1.1 20\r\n\r\n",
	    "http/1.1 200 OK\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n folded\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nNo-Colon\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
	    "HTTP/1.1 200 OK\r\n: empty name\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nX: a\nb\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nX: a\x1b[31m\r\n\r\n",
	    "HTTP/1.1 200 \x7f\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
	};
	struct lg_client_head h;

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct lg_err *err = NULL;

		if (head(bad[i], &h, &err) != -EBADMSG)
			fail_msg("accepted: %s", bad[i]);
		assert_non_null(err);
		assert_null(strchr(err->msg, '\n'));
		lg_err_free(&err);
	}
	/* A NUL inside a field. */
	{
		const char s[] = "HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n";
		struct lg_err *err = NULL;

		assert_int_equal(lg_client_parse_head(s, sizeof(s) - 1, &h, &err), -EBADMSG);
		lg_err_free(&err);
	}
}

static void test_head_limits(void **state)
{
	struct lg_err *err = NULL;
	struct lg_client_head h;
	char *s = xmalloc(LG_CLIENT_MAX_HEAD + 64);
	size_t n;

	/* A head that never ends: refused once it reaches the bound, not before. */
	n = (size_t)sprintf(s, "HTTP/1.1 200 OK\r\nX: ");
	memset(s + n, 'a', LG_CLIENT_MAX_HEAD + 10 - n);
	assert_int_equal(lg_client_parse_head(s, LG_CLIENT_MAX_HEAD - 1, &h, &err), 0);
	assert_int_equal(lg_client_parse_head(s, LG_CLIENT_MAX_HEAD, &h, &err), -EBADMSG);
	assert_non_null(strstr(err->msg, "over"));
	lg_err_free(&err);
	/* Its end just past the bound does not count. */
	memcpy(s + LG_CLIENT_MAX_HEAD - 2, "\r\n\r\n", 4);
	assert_int_equal(lg_client_parse_head(s, LG_CLIENT_MAX_HEAD + 2, &h, &err), -EBADMSG);
	lg_err_free(&err);

	/* Fields: LG_CLIENT_MAX_FIELDS pass, one more does not. */
	for (unsigned extra = 0; extra < 2; extra++) {
		n = (size_t)sprintf(s, "HTTP/1.1 200 OK\r\n");
		for (unsigned i = 0; i < LG_CLIENT_MAX_FIELDS + extra; i++)
			n += (size_t)sprintf(s + n, "X: %u\r\n", i);
		n += (size_t)sprintf(s + n, "\r\n");
		assert_int_equal(lg_client_parse_head(s, n, &h, &err),
				 extra ? -EBADMSG : (ssize_t)n);
		lg_err_free(&err);
	}
	free(s);
}

/* ---- the body ---- */

struct buf {
	char *p;
	size_t len;
	size_t fail_after; /* the sink fails once this much has arrived (0: never) */
};

static int buf_sink(void *ctx, const uint8_t *p, size_t n, struct lg_err **err)
{
	struct buf *b = ctx;

	if (b->fail_after != 0 && b->len + n >= b->fail_after)
		return lg_err_msg(err, ENOSPC, "sink full");
	b->p = xrealloc(b->p, b->len + n + 1);
	memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

/* Decodes s (after a head h) in pieces of `step` bytes; returns the input used or <0. */
static ssize_t decode(const struct lg_client_head *h, const char *s, size_t len, size_t step,
		      struct buf *out, struct lg_client_body *b, struct lg_err **err)
{
	size_t used = 0;

	lg_client_body_init(b, h);
	while (used < len && !b->done) {
		size_t n = len - used < step ? len - used : step;
		ssize_t r =
		    lg_client_body_feed(b, (const uint8_t *)s + used, n, buf_sink, out, err);

		if (r < 0)
			return r;
		used += (size_t)r;
		if ((size_t)r < n)
			break;
	}
	return (ssize_t)used;
}

static void test_chunked(void **state)
{
	const char *s = "5\r\nhello\r\n7;name=\"v\"\r\n, world\r\n000\r\nX-Trailer: 1\r\n\r\nEXTRA";
	struct lg_client_head h = {.status = 200, .chunked = true};
	struct lg_client_body b;
	struct lg_err *err = NULL;

	/* Split at every size, down to one byte at a time: the same bytes out. */
	for (size_t step = 1; step <= strlen(s); step++) {
		struct buf out = {0};
		ssize_t used = decode(&h, s, strlen(s), step, &out, &b, &err);

		assert_null(err);
		assert_int_equal(used, (ssize_t)strlen(s) - 5); /* EXTRA is not the body's */
		assert_true(b.done);
		assert_int_equal(lg_client_body_eof(&b, &err), 0);
		assert_string_equal(out.p, "hello, world");
		free(out.p);
	}
	/* Upper-case hex, no trailers. */
	{
		struct buf out = {0};

		assert_int_equal(decode(&h, "A\r\n0123456789\r\n0\r\n\r\n", 20, 3, &out, &b, &err),
				 20);
		assert_string_equal(out.p, "0123456789");
		free(out.p);
	}
}

static void test_chunked_malformed(void **state)
{
	static const char *bad[] = {
	    "\r\n",			     /* no size */
	    "g\r\n",			     /* not hex */
	    "5 \r\nhello\r\n0\r\n\r\n",	     /* a space after the size */
	    "-5\r\n",			     /* a sign */
	    "5\nhello\r\n",		     /* LF without CR */
	    "5\r\nhelloX\r\n",		     /* longer than its size */
	    "5\r\nhello\rX",		     /* CR without LF */
	    "10000000000000000\r\n",	     /* 17 digits */
	    "5;a\x01\r\nhello\r\n0\r\n\r\n", /* a control character in an extension */
	    "0\r\n bad trailer\r\n\r\n",     /* a trailer that starts with a space */
	    "0\r\nX: 1\nY: 2\r\n\r\n",	     /* a bare LF in the trailers */
	    "0\r\n\rX",			     /* CR without LF at the end */
	};
	struct lg_client_head h = {.status = 200, .chunked = true};
	struct lg_client_body b;

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		for (size_t step = 1; step <= strlen(bad[i]); step += strlen(bad[i]) - 1) {
			struct lg_err *err = NULL;
			struct buf out = {0};

			if (decode(&h, bad[i], strlen(bad[i]), step, &out, &b, &err) != -EBADMSG)
				fail_msg("accepted chunked body %zu (step %zu)", i, step);
			lg_err_free(&err);
			free(out.p);
		}
	}
}

static void test_chunked_limits(void **state)
{
	struct lg_client_head h = {.status = 200, .chunked = true};
	struct lg_client_body b;
	struct lg_err *err = NULL;
	struct buf out = {0};
	size_t len = LG_CLIENT_MAX_TRAILER + 64;
	char *s = xmalloc(len + 1);

	/* An endless chunk extension. */
	memset(s, 'x', len);
	memcpy(s, "1;", 2);
	assert_int_equal(decode(&h, s, len, 100, &out, &b, &err), -EBADMSG);
	assert_non_null(strstr(err->msg, "extension"));
	lg_err_free(&err);
	/* Endless trailers. */
	memcpy(s, "0\r\nX: ", 6);
	assert_int_equal(decode(&h, s, len, 100, &out, &b, &err), -EBADMSG);
	assert_non_null(strstr(err->msg, "trailer"));
	lg_err_free(&err);
	/* Sixteen hex digits are fine (the sink bounds the body). */
	assert_int_equal(decode(&h, "ffffffffffffffff\r\nab", 20, 1, &out, &b, &err), 20);
	assert_int_equal(out.len, 2);
	assert_false(b.done);
	/* Cut short: the end of the connection says so. */
	assert_int_equal(lg_client_body_eof(&b, &err), -EBADMSG);
	lg_err_free(&err);
	free(out.p);
	free(s);
}

static void test_length_and_eof(void **state)
{
	struct lg_client_head h = {.status = 200, .has_length = true, .content_length = 5};
	struct lg_client_body b;
	struct lg_err *err = NULL;
	struct buf out = {0};

	assert_int_equal(decode(&h, "hello world", 11, 2, &out, &b, &err), 5);
	assert_true(b.done);
	assert_string_equal(out.p, "hello");
	free(out.p);
	memset(&out, 0, sizeof(out));
	assert_int_equal(decode(&h, "hel", 3, 2, &out, &b, &err), 3);
	assert_int_equal(lg_client_body_eof(&b, &err), -EBADMSG);
	lg_err_free(&err);
	free(out.p);

	/* No framing: to the end of the connection. */
	h = (struct lg_client_head){.status = 200};
	memset(&out, 0, sizeof(out));
	assert_int_equal(decode(&h, "all of it", 9, 4, &out, &b, &err), 9);
	assert_false(b.done);
	assert_int_equal(lg_client_body_eof(&b, &err), 0);
	assert_string_equal(out.p, "all of it");
	free(out.p);

	/* 204 has no body whatever it says. */
	h = (struct lg_client_head){.status = 204, .has_length = true, .content_length = 5};
	memset(&out, 0, sizeof(out));
	assert_int_equal(decode(&h, "hello", 5, 5, &out, &b, &err), 0);
	assert_true(b.done);
	assert_null(out.p);

	/* The sink's error stops the decoder and is returned. */
	h = (struct lg_client_head){.status = 200, .chunked = true};
	out.fail_after = 3;
	assert_int_equal(decode(&h, "5\r\nhello\r\n0\r\n\r\n", 15, 15, &out, &b, &err), -ENOSPC);
	assert_string_equal(err->msg, "sink full");
	lg_err_free(&err);
	free(out.p);
}

/* ---- NDJSON ---- */

struct seen {
	int n;
	char text[1024];
};

static int on_line(void *ctx, json_t *obj, struct lg_err **err)
{
	struct seen *s = ctx;
	char *d = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
	size_t used = strlen(s->text);

	snprintf(s->text + used, sizeof(s->text) - used, "%s|", d);
	free(d);
	s->n++;
	if (json_object_get(obj, "stop") != NULL)
		return lg_err_msg(err, ECANCELED, "stopped");
	return 0;
}

static void test_lines(void **state)
{
	const char *s = "{\"a\":1}\n\n  \r\n{\"b\":\"x\\ny\"}\r\n{\"c\":[1,2]}\n";
	struct lg_err *err = NULL;

	for (size_t step = 1; step <= strlen(s); step++) {
		struct seen seen = {0};
		struct lg_client_lines l = {.on_line = on_line, .ctx = &seen};

		for (size_t i = 0; i < strlen(s); i += step) {
			size_t n = strlen(s) - i < step ? strlen(s) - i : step;

			assert_int_equal(lg_client_lines_feed(&l, (const uint8_t *)s + i, n, &err),
					 0);
		}
		assert_int_equal(lg_client_lines_end(&l, &err), 0);
		assert_int_equal(seen.n, 3);
		assert_string_equal(seen.text, "{\"a\":1}|{\"b\":\"x\\ny\"}|{\"c\":[1,2]}|");
		lg_client_lines_clear(&l);
	}
}

static void test_lines_bad(void **state)
{
	static const char *bad[] = {"[1,2]\n", "\"text\"\n", "{\"a\":1\n", "{\"a\":1,\"a\":2}\n",
				    "{\"a\":1} x\n"};
	struct lg_err *err = NULL;
	struct seen seen = {0};
	struct lg_client_lines l = {.on_line = on_line, .ctx = &seen};

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		if (lg_client_lines_feed(&l, (const uint8_t *)bad[i], strlen(bad[i]), &err) !=
		    -EBADMSG)
			fail_msg("accepted line %s", bad[i]);
		lg_err_free(&err);
		lg_client_lines_clear(&l);
	}
	assert_int_equal(seen.n, 0);
	/* An unfinished line at the end. */
	assert_int_equal(lg_client_lines_feed(&l, (const uint8_t *)"{\"a\":1}", 7, &err), 0);
	assert_int_equal(lg_client_lines_end(&l, &err), -EBADMSG);
	lg_err_free(&err);
	lg_client_lines_clear(&l);
	/* The callback's error stops the stream. */
	assert_int_equal(
	    lg_client_lines_feed(&l, (const uint8_t *)"{\"stop\":1}\n{\"a\":1}\n", 19, &err),
	    -ECANCELED);
	assert_int_equal(seen.n, 1);
	lg_err_free(&err);
	lg_client_lines_clear(&l);
}

static void test_lines_oversize(void **state)
{
	size_t n = LG_CLIENT_MAX_LINE / 4;
	uint8_t *chunk = xmalloc(n);
	struct lg_err *err = NULL;
	struct seen seen = {0};
	struct lg_client_lines l = {.on_line = on_line, .ctx = &seen};
	int r = 0;

	memset(chunk, ' ', n);
	for (int i = 0; i < 5 && r == 0; i++)
		r = lg_client_lines_feed(&l, chunk, n, &err);
	assert_int_equal(r, -EBADMSG);
	assert_non_null(strstr(err->msg, "MiB"));
	assert_true(l.cap <= LG_CLIENT_MAX_LINE);
	lg_err_free(&err);
	lg_client_lines_clear(&l);
	free(chunk);
}

static void test_printable(void **state)
{
	char *s = lg_client_printable("a\x1b[31mb\n\xc2\x9b"
				      "c\xff\xc3\xa9",
				      512);

	/* ESC, LF and the C1 CSI become '?'; bad UTF-8 becomes U+FFFD; é stays. */
	assert_string_equal(s, "a?[31mb??c\xef\xbf\xbd\xc3\xa9");
	free(s);
	/* Cut at the bound, never inside a character. */
	s = lg_client_printable("ab\xc3\xa9", 3);
	assert_string_equal(s, "ab");
	free(s);
	assert_true(lg_client_id_ok("sb-0123456789ab"));
	assert_false(lg_client_id_ok("../x"));
	assert_false(lg_client_id_ok("a b"));
	assert_false(lg_client_id_ok(""));
}

/* ---- requests against a fake server ---- */

struct fake {
	int fd;
	const char *const *pieces; /* written in turn, a little apart */
	char request[65536];
	size_t request_len;
	bool hold; /* read the request, then answer nothing until closed */
};

static size_t request_end(const char *r, size_t n)
{
	const char *e = memmem(r, n, "\r\n\r\n", 4);
	const char *cl;
	size_t len = 0;

	if (e == NULL)
		return 0;
	cl = strcasestr(r, "Content-Length: ");
	if (cl != NULL && cl < e)
		len = strtoul(cl + 16, NULL, 10);
	return (size_t)(e + 4 - r) + len <= n ? (size_t)(e + 4 - r) + len : 0;
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	ssize_t r;

	while (request_end(f->request, f->request_len) == 0 &&
	       (r = read(f->fd, f->request + f->request_len,
			 sizeof(f->request) - 1 - f->request_len)) > 0)
		f->request_len += (size_t)r;
	f->request[f->request_len] = '\0';
	if (f->hold) {
		char c;

		while (read(f->fd, &c, 1) > 0)
			;
	}
	for (size_t i = 0; f->pieces != NULL && f->pieces[i] != NULL; i++) {
		if (write(f->fd, f->pieces[i], strlen(f->pieces[i])) < 0)
			break;
		usleep(2000);
	}
	close(f->fd);
	return NULL;
}

static int fake_start(struct fake *f, pthread_t *t)
{
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	f->fd = sv[1];
	assert_int_equal(lg_set_nonblock(sv[0], true), 0);
	assert_int_equal(pthread_create(t, NULL, fake_main, f), 0);
	return sv[0];
}

static void test_do_json(void **state)
{
	static const char *const pieces[] = {
	    "HTTP/1.1 201 Cre", "ated\r\nContent-Le",
	    "ngth: 14\r\nX-Request-Id: r-1\r\n\r\n{\"id\":", "\"sb-1\"}\n", NULL};
	struct fake f = {.pieces = pieces};
	struct lg_client_req rq = {.method = "POST",
				   .target = "/v1/sandboxes",
				   .body = "{\"cpus\":1}",
				   .body_len = 10,
				   .request_id = "r-1",
				   .cancel_fd = -1,
				   .timeout_ms = 5000};
	struct lg_client_resp resp;
	struct lg_err *err = NULL;
	pthread_t t;
	int fd = fake_start(&f, &t);

	assert_int_equal(lg_client_do(fd, &rq, &resp, &err), 0);
	pthread_join(t, NULL);
	assert_int_equal(resp.status, 201);
	assert_string_equal(resp.request_id, "r-1");
	assert_int_equal(resp.body_len, 14);
	assert_string_equal(json_string_value(json_object_get(resp.json, "id")), "sb-1");
	assert_non_null(strstr(f.request, "POST /v1/sandboxes HTTP/1.1\r\n"));
	assert_non_null(strstr(f.request, "Connection: close\r\n"));
	assert_non_null(strstr(f.request, "X-Request-Id: r-1\r\n"));
	assert_non_null(strstr(f.request, "Content-Length: 10\r\n\r\n{\"cpus\":1}"));
	lg_client_resp_clear(&resp);
}

static void test_do_stream(void **state)
{
	static const char *const pieces[] = {
	    "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: "
	    "chunked\r\n\r\n",
	    "8\r\n{\"a\":1}\n\r\n",
	    "4\r\n{\"b\"",
	    "\r\n6\r\n:true}\r\n",
	    "1\r\n\n\r\n0\r\n\r\n",
	    NULL};
	struct fake f = {.pieces = pieces};
	struct seen seen = {0};
	struct lg_client_req rq = {.method = "POST",
				   .target = "/v1/sandboxes/sb-1/exec",
				   .body = "{}",
				   .body_len = 2,
				   .cancel_fd = -1,
				   .on_line = on_line,
				   .ctx = &seen};
	struct lg_client_resp resp;
	struct lg_err *err = NULL;
	pthread_t t;
	int fd = fake_start(&f, &t);

	assert_int_equal(lg_client_do(fd, &rq, &resp, &err), 0);
	pthread_join(t, NULL);
	assert_null(err);
	assert_int_equal(resp.status, 200);
	assert_null(resp.body);
	assert_string_equal(seen.text, "{\"a\":1}|{\"b\":true}|");
	lg_client_resp_clear(&resp);
}

static void test_do_error_not_streamed(void **state)
{
	static const char *const pieces[] = {
	    "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: 38\r\n\r\n"
	    "{\"error\":\"denied\\u001b[2J by a human\"}",
	    NULL};
	struct fake f = {.pieces = pieces};
	struct seen seen = {0};
	struct lg_client_req rq = {
	    .method = "POST", .target = "/x", .cancel_fd = -1, .on_line = on_line, .ctx = &seen};
	struct lg_client_resp resp;
	struct lg_err *err = NULL;
	pthread_t t;
	int fd = fake_start(&f, &t);
	char *text;

	assert_int_equal(lg_client_do(fd, &rq, &resp, &err), 0);
	pthread_join(t, NULL);
	assert_int_equal(resp.status, 403);
	assert_int_equal(seen.n, 0);
	text = lg_client_error_text(&resp);
	assert_string_equal(text, "denied?[2J by a human");
	free(text);
	assert_non_null(strstr(f.request, "Content-Length: 0\r\n"));
	lg_client_resp_clear(&resp);

	/* No JSON: the status says it. */
	resp.status = 502;
	text = lg_client_error_text(&resp);
	assert_string_equal(text, "HTTP 502 from the service");
	free(text);
}

static void test_do_failures(void **state)
{
	static const char *const cut[] = {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", NULL};
	static const char *const cut_head[] = {"HTTP/1.1 200 OK\r\nContent-Len", NULL};
	static const char *const garbage[] = {"SSH-2.0-OpenSSH\r\n\r\n", NULL};
	static const char *const nothing[] = {NULL};
	struct {
		const char *const *pieces;
		int want;
		const char *msg;
	} cases[] = {
	    {cut, -EBADMSG, "cut short"},
	    {cut_head, -EPIPE, "cut short"},
	    {garbage, -EBADMSG, "HTTP/1.x"},
	    {nothing, -EPIPE, "without answering"},
	};
	struct lg_client_req rq = {.method = "GET", .target = "/v1/sandboxes", .cancel_fd = -1};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct fake f = {.pieces = cases[i].pieces};
		struct lg_client_resp resp;
		struct lg_err *err = NULL;
		pthread_t t;
		int fd = fake_start(&f, &t);

		assert_int_equal(lg_client_do(fd, &rq, &resp, &err), cases[i].want);
		pthread_join(t, NULL);
		assert_non_null(strstr(err->msg, cases[i].msg));
		lg_err_free(&err);
		lg_client_resp_clear(&resp);
	}
	/* A bad target is refused before anything is sent. */
	{
		struct lg_client_req bad = {.method = "GET", .target = "/x y", .cancel_fd = -1};
		struct lg_client_resp resp;
		struct lg_err *err = NULL;
		int sv[2];

		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
		assert_int_equal(lg_client_do(sv[0], &bad, &resp, &err), -EINVAL);
		lg_err_free(&err);
		close(sv[1]);
	}
}

/* The client stops reading at LG_CLIENT_MAX_BODY, however much the server has. */
static void *flood_main(void *arg)
{
	int fd = *(int *)arg;
	static char junk[65536];
	char req[4096];
	const char *h = "HTTP/1.1 200 OK\r\n\r\n";

	memset(junk, 'x', sizeof(junk));
	if (read(fd, req, sizeof(req)) <= 0 || write(fd, h, strlen(h)) < 0) {
		close(fd);
		return NULL;
	}
	while (write(fd, junk, sizeof(junk)) > 0)
		;
	close(fd);
	return NULL;
}

static void test_do_oversize_body(void **state)
{
	struct lg_client_req rq = {.method = "GET", .target = "/metrics", .cancel_fd = -1};
	struct lg_client_resp resp;
	struct lg_err *err = NULL;
	pthread_t t;
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(pthread_create(&t, NULL, flood_main, &sv[1]), 0);
	assert_int_equal(lg_client_do(sv[0], &rq, &resp, &err), -EMSGSIZE);
	assert_non_null(strstr(err->msg, "16 MiB"));
	lg_err_free(&err);
	pthread_join(t, NULL);
}

static void test_do_cancel_timeout_grace(void **state)
{
	static const char *const late[] = {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", NULL};
	struct lg_client_resp resp;
	struct lg_err *err = NULL;
	pthread_t t;
	int p[2], fd;
	uint64_t t0;

	assert_int_equal(pipe(p), 0);
	/* Cancelled while the server holds the answer back. */
	{
		struct fake f = {.hold = true};
		struct lg_client_req rq = {.method = "GET", .target = "/", .cancel_fd = p[0]};

		fd = fake_start(&f, &t);
		assert_int_equal(write(p[1], "x", 1), 1);
		assert_int_equal(lg_client_do(fd, &rq, &resp, &err), -EINTR);
		lg_err_free(&err);
		pthread_join(t, NULL); /* the client closed: the server's read ended */
	}
	/* A server that never answers: the timeout. */
	{
		struct fake f = {.hold = true};
		struct lg_client_req rq = {
		    .method = "GET", .target = "/", .cancel_fd = -1, .timeout_ms = 200};

		fd = fake_start(&f, &t);
		t0 = lg_now_ms();
		assert_int_equal(lg_client_do(fd, &rq, &resp, &err), -ETIMEDOUT);
		assert_true(lg_now_ms() - t0 >= 190);
		lg_err_free(&err);
		pthread_join(t, NULL);
	}
	/* Cancelled with a grace period: the answer that comes in time is kept. */
	{
		struct fake f = {.pieces = late};
		struct lg_client_req rq = {
		    .method = "GET", .target = "/", .cancel_fd = p[0], .grace_ms = 5000};

		fd = fake_start(&f, &t);
		assert_int_equal(lg_client_do(fd, &rq, &resp, &err), 0);
		assert_true(resp.interrupted);
		assert_int_equal(resp.status, 200);
		lg_client_resp_clear(&resp);
		pthread_join(t, NULL);
	}
	/* ... and one that does not come: -EINTR once the grace is over. */
	{
		struct fake f = {.hold = true};
		struct lg_client_req rq = {
		    .method = "GET", .target = "/", .cancel_fd = p[0], .grace_ms = 150};

		fd = fake_start(&f, &t);
		assert_int_equal(lg_client_do(fd, &rq, &resp, &err), -EINTR);
		lg_err_free(&err);
		pthread_join(t, NULL);
	}
	close(p[0]);
	close(p[1]);
}

/* ---- connecting ---- */

static char tmpdir[64];

static void test_connect(void **state)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	cleanup_free char *path = xasprintf("%s/stale.sock", tmpdir);
	struct lg_err *err = NULL;
	int fd, s;

	assert_int_equal(lg_client_connect("/nonexistent/serve.sock", 1000, &fd, &err), -ENOENT);
	lg_err_free(&err);
	/* A socket file nobody listens on any more. */
	s = socket(AF_UNIX, SOCK_STREAM, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(s);
	assert_int_equal(lg_client_connect(path, 1000, &fd, &err), -ECONNREFUSED);
	assert_non_null(strstr(err->msg, "stale"));
	lg_err_free(&err);
	/* A listening one. */
	unlink(path);
	s = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(s, 1), 0);
	assert_int_equal(lg_client_connect(path, 1000, &fd, &err), 0);
	assert_true(fcntl(fd, F_GETFL) & O_NONBLOCK);
	close(fd);
	close(s);
	unlink(path);
}

/* ---- run through a fake service ---- */

struct svc {
	int lfd;
	int exec_mode; /* 0: output and exit 3; 1: 403; 2: timed out; 3: signal 9; 4: stream error
			*/
	int creates, execs, deletes, probes;
	char exec_body[8192];
	char last_delete[128];
	pthread_t t;
};

static void svc_reply(int fd, const char *status, const char *body)
{
	char *r = xasprintf("HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: "
			    "%zu\r\n\r\n%s",
			    status, strlen(body), body);
	assert_true(write(fd, r, strlen(r)) == (ssize_t)strlen(r));
	free(r);
}

static void svc_chunk(int fd, const char *line)
{
	char *c = xasprintf("%zx\r\n%s\r\n", strlen(line), line);
	assert_true(write(fd, c, strlen(c)) == (ssize_t)strlen(c));
	free(c);
}

static void *svc_main(void *arg)
{
	struct svc *s = arg;
	int fd;

	while ((fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
		char req[65536];
		size_t n = 0;
		ssize_t r;
		const char *body;

		while (request_end(req, n) == 0 && (r = read(fd, req + n, sizeof(req) - 1 - n)) > 0)
			n += (size_t)r;
		req[n] = '\0';
		body = strstr(req, "\r\n\r\n");
		if (n == 0) {
			s->probes++;
		} else if (strncmp(req, "POST /v1/sandboxes ", 19) == 0) {
			s->creates++;
			svc_reply(fd, "201 Created",
				  "{\"id\":\"sb-0123456789ab\",\"state\":\"ready\",\"spawn_path\":"
				  "\"pool\",\"spawn_ms\":3}");
		} else if (strncmp(req, "POST /v1/sandboxes/sb-0123456789ab/exec ", 40) == 0) {
			s->execs++;
			snprintf(s->exec_body, sizeof(s->exec_body), "%s", body ? body + 4 : "");
			if (s->exec_mode == 1) {
				svc_reply(fd, "403 Forbidden",
					  "{\"error\":\"sandbox_exec was denied by a human\"}");
			} else {
				const char *h = "HTTP/1.1 200 OK\r\nContent-Type: "
						"application/x-ndjson\r\nTransfer-Encoding: "
						"chunked\r\n\r\n";
				assert_true(write(fd, h, strlen(h)) > 0);
				svc_chunk(fd, "{\"stream\":\"stdout\",\"data\":\"out \"}\n");
				svc_chunk(fd, "{\"stream\":\"stdout\",\"data_b64\":\"AP8K\"}\n");
				svc_chunk(fd, "{\"stream\":\"stderr\",\"data\":\"err\\n\"}\n");
				svc_chunk(fd, s->exec_mode == 2 ? "{\"exit_code\":0,\"signal\":9,"
								  "\"timed_out\":true}\n"
					      : s->exec_mode == 3
						  ? "{\"exit_code\":0,\"signal\":9,\"timed_out\":"
						    "false}\n"
					      : s->exec_mode == 4
						  ? "{\"error\":\"the agent went away\"}\n"
						  : "{\"exit_code\":3,\"signal\":0,\"timed_out\":"
						    "false,\"duration_ms\":5}\n");
				assert_true(write(fd, "0\r\n\r\n", 5) == 5);
			}
		} else if (strncmp(req, "DELETE /v1/sandboxes/", 21) == 0) {
			s->deletes++;
			snprintf(s->last_delete, sizeof(s->last_delete), "%.*s",
				 (int)(strchr(req + 7, ' ') - req), req);
			svc_reply(fd, "200 OK", "{\"id\":\"sb-0123456789ab\",\"deleted\":true}");
		} else {
			svc_reply(fd, "404 Not Found", "{\"error\":\"no such route\"}");
		}
		close(fd);
	}
	return NULL;
}

static void svc_start(struct svc *s)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/serve.sock", tmpdir);
	unlink(sa.sun_path);
	s->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(bind(s->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(s->lfd, 8), 0);
	assert_int_equal(pthread_create(&s->t, NULL, svc_main, s), 0);
}

static void svc_stop(struct svc *s)
{
	char path[128];

	shutdown(s->lfd, SHUT_RDWR);
	pthread_join(s->t, NULL);
	close(s->lfd);
	snprintf(path, sizeof(path), "%s/serve.sock", tmpdir);
	unlink(path);
}

/* Runs run_via_service on argv with stdout and stderr captured. */
static int run_captured(char **argv, int argc, int *code, char *out, size_t outlen,
			struct lg_err **err)
{
	struct run_opts o;
	char path[128];
	int saved_out = dup(1), saved_err = dup(2), fd, r;
	ssize_t n;

	assert_int_equal(run_opts_parse(argc, argv, &o, err), 0);
	snprintf(path, sizeof(path), "%s/out", tmpdir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	fflush(stdout);
	fflush(stderr);
	dup2(fd, 1);
	dup2(fd, 2);
	r = run_via_service(&o, code, err);
	fflush(stdout);
	fflush(stderr);
	dup2(saved_out, 1);
	dup2(saved_err, 2);
	close(saved_out);
	close(saved_err);
	n = pread(fd, out, outlen - 1, 0);
	out[n > 0 ? n : 0] = '\0';
	/* Shown as text: a NUL of the output becomes '.'. */
	for (ssize_t i = 0; i < n; i++)
		if (out[i] == '\0')
			out[i] = '.';
	close(fd);
	return r;
}

static void test_run_remote(void **state)
{
	char *argv[] = {"run",	"--no-stdin", "--env", "K=v w",		"--workdir",
			"/tmp", "--timeout",  "7",     "--user",	"agent",
			"--",	"sh",	      "-c",    "echo \xc3\xa9", NULL};
	struct svc s = {0};
	struct lg_err *err = NULL;
	char out[4096];
	int code = -1;
	json_t *body;

	svc_start(&s);
	assert_int_equal(run_captured(argv, 14, &code, out, sizeof(out), &err), 1);
	assert_null(err);
	assert_int_equal(code, 3);
	/* stdout and stderr in order, the base64 bytes decoded. */
	assert_string_equal(out, "out .\xff\nerr\n");
	assert_int_equal(s.creates, 1);
	assert_int_equal(s.execs, 1);
	assert_int_equal(s.deletes, 1);
	assert_string_equal(s.last_delete, "DELETE /v1/sandboxes/sb-0123456789ab");
	body = json_loads(s.exec_body, 0, NULL);
	assert_non_null(body);
	assert_string_equal(json_string_value(json_array_get(json_object_get(body, "argv"), 2)),
			    "echo \xc3\xa9");
	assert_string_equal(json_string_value(json_object_get(json_object_get(body, "env"), "K")),
			    "v w");
	assert_string_equal(json_string_value(json_object_get(body, "cwd")), "/tmp");
	assert_string_equal(json_string_value(json_object_get(body, "user")), "agent");
	assert_int_equal(json_integer_value(json_object_get(body, "timeout")), 7);
	assert_null(json_object_get(body, "stdin"));
	json_decref(body);

	/* Timed out: 124 and a line saying so; killed by a signal: 128+N. */
	s.exec_mode = 2;
	assert_int_equal(run_captured(argv, 14, &code, out, sizeof(out), &err), 1);
	assert_int_equal(code, 124);
	assert_non_null(strstr(out, "timed out after 7 s"));
	s.exec_mode = 3;
	assert_int_equal(run_captured(argv, 14, &code, out, sizeof(out), &err), 1);
	assert_int_equal(code, 137);

	/* The service's errors: one line in *err, and the sandbox still destroyed. */
	s.exec_mode = 1;
	assert_true(run_captured(argv, 14, &code, out, sizeof(out), &err) < 0);
	assert_string_equal(err->msg, "sandbox_exec was denied by a human");
	lg_err_free(&err);
	s.exec_mode = 4;
	assert_true(run_captured(argv, 14, &code, out, sizeof(out), &err) < 0);
	assert_string_equal(err->msg, "the agent went away");
	lg_err_free(&err);
	assert_int_equal(s.deletes, 5);
	assert_int_equal(s.creates, 5);
	svc_stop(&s);
}

static void test_run_remote_standalone(void **state)
{
	char *plain[] = {"run", "--no-stdin", "--", "true", NULL};
	char *net[] = {"run", "--net", "allow=example.com", "--no-stdin", "--", "true", NULL};
	char *forced[] = {"run", "--standalone", "--no-stdin", "--", "true", NULL};
	char *raw[] = {"run", "--no-stdin", "--", "echo", "\xff", NULL};
	struct svc s = {0};
	struct lg_err *err = NULL;
	char out[4096];
	int code = -1;

	/* No socket: standalone, and nothing was said. */
	assert_int_equal(run_captured(plain, 4, &code, out, sizeof(out), &err), 0);
	assert_null(err);
	assert_string_equal(out, "");
	/* A stale socket file. */
	{
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		int fd = socket(AF_UNIX, SOCK_STREAM, 0);

		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/serve.sock", tmpdir);
		assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
		close(fd);
		assert_int_equal(run_captured(plain, 4, &code, out, sizeof(out), &err), 0);
		assert_null(err);
		unlink(sa.sun_path);
	}
	/* A data directory too long for a socket path: no service could be there. */
	{
		char longhome[300];

		memset(longhome, 'x', sizeof(longhome) - 1);
		longhome[0] = '/';
		longhome[sizeof(longhome) - 1] = '\0';
		setenv("LUMINAGUARD_HOME", longhome, 1);
		lg_env_reload();
		assert_int_equal(run_captured(plain, 4, &code, out, sizeof(out), &err), 0);
		assert_null(err);
		setenv("LUMINAGUARD_HOME", tmpdir, 1);
		lg_env_reload();
	}
	/* A live service, but options it cannot express: never asked. */
	svc_start(&s);
	assert_int_equal(run_captured(net, 6, &code, out, sizeof(out), &err), 0);
	assert_int_equal(run_captured(forced, 5, &code, out, sizeof(out), &err), 0);
	assert_int_equal(run_captured(raw, 5, &code, out, sizeof(out), &err), 0);
	assert_null(err);
	svc_stop(&s);
	assert_int_equal(s.creates + s.execs + s.probes, 0);
}

struct feeder {
	int fd;
	size_t len;
};

static void *feed_main(void *arg)
{
	struct feeder *f = arg;
	char buf[4096];

	for (size_t i = 0; i < f->len; i += sizeof(buf)) {
		size_t n = f->len - i < sizeof(buf) ? f->len - i : sizeof(buf);

		for (size_t k = 0; k < n; k++)
			buf[k] = (char)('a' + (i + k) % 26);
		if (lg_write_all(f->fd, buf, n) < 0)
			break;
	}
	close(f->fd);
	return NULL;
}

static void test_run_remote_stdin(void **state)
{
	char *argv[] = {"run", "--", "cat", NULL};
	struct svc s = {0};
	struct lg_err *err = NULL;
	char out[4096];
	int saved_in = dup(0), p[2], code;
	json_t *body;

	svc_start(&s);
	/* Piped text: forwarded as "stdin". */
	assert_int_equal(pipe(p), 0);
	assert_int_equal(write(p[1], "hello\n", 6), 6);
	close(p[1]);
	dup2(p[0], 0);
	close(p[0]);
	assert_int_equal(run_captured(argv, 3, &code, out, sizeof(out), &err), 1);
	body = json_loads(s.exec_body, 0, NULL);
	assert_string_equal(json_string_value(json_object_get(body, "stdin")), "hello\n");
	json_decref(body);
	/* Bytes that are not UTF-8: "stdin_b64". */
	assert_int_equal(pipe(p), 0);
	assert_int_equal(write(p[1], "\x00\xff", 2), 2);
	close(p[1]);
	dup2(p[0], 0);
	close(p[0]);
	assert_int_equal(run_captured(argv, 3, &code, out, sizeof(out), &err), 1);
	body = json_loads(s.exec_body, 0, NULL);
	assert_string_equal(json_string_value(json_object_get(body, "stdin_b64")), "AP8=");
	json_decref(body);
	assert_int_equal(s.creates, 2);

	/*
	 * Over the bound: standalone, and stdin still holds every byte, the
	 * ones read included, for the standalone path to read.
	 */
	{
		struct feeder f = {.len = LG_REMOTE_MAX_STDIN + 100000};
		pthread_t t;
		size_t got = 0;
		bool same = true;
		char buf[65536];
		ssize_t n;

		assert_int_equal(pipe(p), 0);
		f.fd = p[1];
		dup2(p[0], 0);
		close(p[0]);
		assert_int_equal(pthread_create(&t, NULL, feed_main, &f), 0);
		assert_int_equal(run_captured(argv, 3, &code, out, sizeof(out), &err), 0);
		assert_null(err);
		while ((n = read(0, buf, sizeof(buf))) > 0) {
			for (ssize_t k = 0; k < n; k++)
				same = same && buf[k] == (char)('a' + (got + (size_t)k) % 26);
			got += (size_t)n;
		}
		pthread_join(t, NULL);
		assert_int_equal(got, f.len);
		assert_true(same);
	}
	/* A regular file over the bound is not even read. */
	{
		char path[128];
		int fd;

		snprintf(path, sizeof(path), "%s/big", tmpdir);
		fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		assert_int_equal(ftruncate(fd, LG_REMOTE_MAX_STDIN + 1), 0);
		dup2(fd, 0);
		close(fd);
		assert_int_equal(run_captured(argv, 3, &code, out, sizeof(out), &err), 0);
		assert_int_equal(lseek(0, 0, SEEK_CUR), 0);
		unlink(path);
	}
	assert_int_equal(s.creates, 2);
	svc_stop(&s);
	dup2(saved_in, 0);
	close(saved_in);
}

static int setup(void **state)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/lg-test-client.XXXXXX");
	assert_non_null(mkdtemp(tmpdir));
	setenv("LUMINAGUARD_HOME", tmpdir, 1);
	lg_env_reload();
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

static int teardown(void **state)
{
	lg_rm_rf(tmpdir);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_head_ok),
	    cmocka_unit_test(test_head_partial),
	    cmocka_unit_test(test_head_malformed),
	    cmocka_unit_test(test_head_limits),
	    cmocka_unit_test(test_chunked),
	    cmocka_unit_test(test_chunked_malformed),
	    cmocka_unit_test(test_chunked_limits),
	    cmocka_unit_test(test_length_and_eof),
	    cmocka_unit_test(test_lines),
	    cmocka_unit_test(test_lines_bad),
	    cmocka_unit_test(test_lines_oversize),
	    cmocka_unit_test(test_printable),
	    cmocka_unit_test(test_do_json),
	    cmocka_unit_test(test_do_stream),
	    cmocka_unit_test(test_do_error_not_streamed),
	    cmocka_unit_test(test_do_failures),
	    cmocka_unit_test(test_do_oversize_body),
	    cmocka_unit_test(test_do_cancel_timeout_grace),
	    cmocka_unit_test(test_connect),
	    cmocka_unit_test(test_run_remote),
	    cmocka_unit_test(test_run_remote_standalone),
	    cmocka_unit_test(test_run_remote_stdin),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
