/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the MCP Streamable HTTP transport against the real MCP
 * core, spoken to over TCP by a small HTTP/1.1 client written here (so
 * every byte on the wire is ours to get wrong).  No tool here boots a VM:
 * the slow call is sandbox_destroy of a sandbox that does not exist,
 * which the default policy makes red, so it waits for a human's approval
 * and asks the client through elicitation.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "approval/approval.h"
#include "common/log.h"
#include "common/util.h"
#include "common/usock.h"
#include "mcp/http.h"
#include "mcp/mcp.h"
#include "mcp/sock.h"
#include "policy/policy.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#define ACCEPT_BOTH "Accept: application/json, text/event-stream\r\n"
#define JSON_CT	    "Content-Type: application/json\r\n"

struct server {
	struct policy *policy;
	struct approval_broker *broker;
	struct mcp_server *srv;
	struct mcp_http *http;
	unsigned port;
	/* remote: the server serves mcp_sock at sock_path, the transport carries sessions there */
	struct mcp_sock *sock;
	char *dir, *sock_path;
};

static struct server *server_start(const struct mcp_http_opts *extra)
{
	struct server *s = xzalloc(sizeof(*s));
	struct mcp_http_opts o = {.bind = "127.0.0.1:0"};
	struct mcp_server_opts so = {0};
	struct lg_err *err = NULL;

	if (extra != NULL)
		o = *extra;
	s->policy = policy_default();
	s->broker = approval_broker_new(5, NULL);
	so.policy = s->policy;
	so.broker = s->broker;
	assert_int_equal(mcp_server_new(&so, &s->srv, &err), 0);
	if (mcp_http_start(s->srv, &o, &s->http, &err) < 0)
		fail_msg("mcp_http_start: %s", err->msg);
	s->port = mcp_http_port(s->http);
	assert_true(s->port > 0);
	return s;
}

/*
 * The same server behind its MCP socket (mcp/sock.h), as `luminaguard
 * serve` has it, and the transport carrying each session to it (what
 * `luminaguard mcp --http` does when a service runs).
 */
static struct server *server_start_remote(void)
{
	struct server *s = xzalloc(sizeof(*s));
	struct mcp_http_opts o = {.bind = "127.0.0.1:0"};
	struct mcp_server_opts so = {0};
	struct lg_err *err = NULL;
	char tmpl[] = "/tmp/lg-test-http.XXXXXX";

	assert_non_null(mkdtemp(tmpl));
	s->dir = xstrdup(tmpl);
	s->sock_path = xasprintf("%s/mcp.sock", s->dir);
	s->policy = policy_default();
	s->broker = approval_broker_new(5, NULL);
	so.policy = s->policy;
	so.broker = s->broker;
	assert_int_equal(mcp_server_new(&so, &s->srv, &err), 0);
	if (mcp_sock_start(s->srv, s->sock_path, &s->sock, &err) < 0)
		fail_msg("mcp_sock_start: %s", err->msg);
	o.service_sock = s->sock_path;
	if (mcp_http_start(NULL, &o, &s->http, &err) < 0)
		fail_msg("mcp_http_start: %s", err->msg);
	s->port = mcp_http_port(s->http);
	return s;
}

static void server_stop(struct server *s)
{
	mcp_http_stop(s->http);
	mcp_sock_stop(s->sock);
	if (s->dir != NULL) {
		rmdir(s->dir);
		free(s->dir);
		free(s->sock_path);
	}
	mcp_server_free(s->srv);
	approval_broker_free(s->broker);
	policy_free(s->policy);
	free(s);
}

/* ---- a small HTTP/1.1 client ---- */

struct conn {
	int fd;
	char buf[16384];
	size_t off, len;
};

struct resp {
	int status;
	char *head; /* header lines, "\n"-separated */
	char *body;
	size_t len;
	bool chunked;
	long content_length;
};

static struct conn *conn_open(unsigned port)
{
	struct conn *c = xzalloc(sizeof(*c));
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	struct timeval tv = {.tv_sec = 15};

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(c->fd >= 0);
	/* A server that never answers fails the test instead of hanging it. */
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	assert_int_equal(connect(c->fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return c;
}

static void conn_close(struct conn *c)
{
	close(c->fd);
	free(c);
}

static int conn_getc(struct conn *c)
{
	if (c->off == c->len) {
		ssize_t n = read(c->fd, c->buf, sizeof(c->buf));
		if (n <= 0)
			return -1;
		c->off = 0;
		c->len = (size_t)n;
	}
	return (unsigned char)c->buf[c->off++];
}

/* One line without its CRLF; NULL at EOF. */
static char *conn_line(struct conn *c)
{
	size_t n = 0, cap = 128;
	char *s = xmalloc(cap);
	int ch;

	while ((ch = conn_getc(c)) >= 0 && ch != '\n') {
		if (n + 2 > cap)
			s = xrealloc(s, cap *= 2);
		s[n++] = (char)ch;
	}
	if (ch < 0 && n == 0) {
		free(s);
		return NULL;
	}
	if (n > 0 && s[n - 1] == '\r')
		n--;
	s[n] = '\0';
	return s;
}

static void conn_read(struct conn *c, char *out, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int ch = conn_getc(c);
		assert_true(ch >= 0);
		out[i] = (char)ch;
	}
}

static void send_raw(struct conn *c, const char *data, size_t n)
{
	assert_int_equal(lg_write_all(c->fd, data, n), (ssize_t)n);
}

static void send_request(struct conn *c, const char *method, const char *headers, const char *body)
{
	char *head = xasprintf("%s /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%s", method,
			       headers != NULL ? headers : "", body != NULL ? "" : "\r\n");
	send_raw(c, head, strlen(head));
	free(head);
	if (body != NULL) {
		char *rest = xasprintf("Content-Length: %zu\r\n\r\n%s", strlen(body), body);
		send_raw(c, rest, strlen(rest));
		free(rest);
	}
}

/* The value of a header of r (a new string), or NULL. */
static char *resp_header(const struct resp *r, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = r->head; p != NULL && *p != '\0';) {
		const char *end = strchr(p, '\n');
		if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
			const char *v = p + n + 1;
			while (*v == ' ')
				v++;
			return strndup(v, (size_t)(end - v));
		}
		p = end + 1;
	}
	return NULL;
}

static void read_head(struct conn *c, struct resp *r)
{
	char *line = conn_line(c), *te, *cl;
	size_t n = 0;

	memset(r, 0, sizeof(*r));
	assert_non_null(line);
	assert_int_equal(sscanf(line, "HTTP/1.%*d %d", &r->status), 1);
	free(line);
	r->head = xstrdup("");
	while ((line = conn_line(c)) != NULL && *line != '\0') {
		r->head = xrealloc(r->head, n + strlen(line) + 2);
		n += (size_t)sprintf(r->head + n, "%s\n", line);
		free(line);
	}
	free(line);
	te = resp_header(r, "Transfer-Encoding");
	cl = resp_header(r, "Content-Length");
	r->chunked = te != NULL && strcasecmp(te, "chunked") == 0;
	r->content_length = cl != NULL ? atol(cl) : -1;
	free(te);
	free(cl);
}

/* Next piece of a chunked body (NUL-terminated), or NULL at its end. */
static char *read_chunk(struct conn *c, size_t *len)
{
	char *line = conn_line(c), *data;
	unsigned long n;

	assert_non_null(line);
	n = strtoul(line, NULL, 16);
	free(line);
	if (n == 0) {
		while ((line = conn_line(c)) != NULL && *line != '\0')
			free(line);
		free(line);
		return NULL;
	}
	data = xmalloc(n + 1);
	conn_read(c, data, n);
	data[n] = '\0';
	line = conn_line(c);
	assert_non_null(line);
	assert_string_equal(line, "");
	free(line);
	*len = n;
	return data;
}

static void read_body(struct conn *c, struct resp *r)
{
	size_t cap = 1;

	r->body = xzalloc(cap);
	if (r->chunked) {
		char *d;
		size_t n;
		while ((d = read_chunk(c, &n)) != NULL) {
			r->body = xrealloc(r->body, r->len + n + 1);
			memcpy(r->body + r->len, d, n + 1);
			r->len += n;
			free(d);
		}
	} else if (r->content_length >= 0) {
		r->body = xrealloc(r->body, (size_t)r->content_length + 1);
		conn_read(c, r->body, (size_t)r->content_length);
		r->len = (size_t)r->content_length;
		r->body[r->len] = '\0';
	} else {
		int ch;
		while ((ch = conn_getc(c)) >= 0) {
			r->body = xrealloc(r->body, r->len + 2);
			r->body[r->len++] = (char)ch;
			r->body[r->len] = '\0';
		}
	}
}

static void resp_free(struct resp *r)
{
	free(r->head);
	free(r->body);
	memset(r, 0, sizeof(*r));
}

/* One request on a fresh connection, the whole response read. */
static void request(unsigned port, const char *method, const char *headers, const char *body,
		    struct resp *r)
{
	struct conn *c = conn_open(port);

	send_request(c, method, headers, body);
	read_head(c, r);
	read_body(c, r);
	conn_close(c);
}

/*
 * The one JSON-RPC message of a response body: the body itself
 * (application/json) or the data of its only SSE "message" event.
 */
static json_t *resp_message(const struct resp *r)
{
	char *ct = resp_header(r, "Content-Type");
	json_t *j = NULL;

	assert_non_null(ct);
	if (strncmp(ct, "application/json", 16) == 0) {
		j = json_loads(r->body, 0, NULL);
	} else {
		const char *d;
		assert_string_equal(ct, "text/event-stream");
		d = strstr(r->body, "data: ");
		assert_non_null(d);
		assert_null(strstr(d + 6, "data: "));
		j = json_loadb(d + 6, strcspn(d + 6, "\n"), 0, NULL);
	}
	free(ct);
	assert_non_null(j);
	return j;
}

static int error_code(const json_t *msg)
{
	return (int)json_integer_value(json_object_get(json_object_get(msg, "error"), "code"));
}

static char *session_headers(const char *sid, const char *extra)
{
	return xasprintf(ACCEPT_BOTH JSON_CT "Mcp-Session-Id: %s\r\n%s", sid,
			 extra != NULL ? extra : "");
}

/* POSTs a message in session sid; returns the status and, if any, its answer. */
static int post(unsigned port, const char *sid, const char *extra, const char *body,
		json_t **answer)
{
	char *h = session_headers(sid, extra);
	struct resp r;
	int status;

	request(port, "POST", h, body, &r);
	free(h);
	status = r.status;
	if (answer != NULL)
		*answer = r.len > 0 ? resp_message(&r) : NULL;
	resp_free(&r);
	return status;
}

#define INIT_BODY(version, caps)                                                                   \
	"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{"                     \
	"\"protocolVersion\":\"" version "\",\"capabilities\":" caps                               \
	",\"clientInfo\":{\"name\":\"test-http\",\"version\":\"1\"}}}"

/* initialize + notifications/initialized; returns the session id. */
static char *open_session(unsigned port, const char *version, bool elicitation)
{
	char *body =
	    xasprintf(INIT_BODY("%s", "%s"), version, elicitation ? "{\"elicitation\":{}}" : "{}");
	struct resp r;
	json_t *m;
	char *sid;

	request(port, "POST", ACCEPT_BOTH JSON_CT, body, &r);
	free(body);
	assert_int_equal(r.status, 200);
	sid = resp_header(&r, "Mcp-Session-Id");
	assert_non_null(sid);
	assert_true(strlen(sid) >= 16);
	m = resp_message(&r);
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(m, "result"), "protocolVersion")),
	    version);
	json_decref(m);
	resp_free(&r);
	assert_int_equal(post(port, sid, NULL,
			      "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}",
			      NULL),
			 202);
	return sid;
}

static struct server *g;

static int group_setup(void **state)
{
	g = server_start(NULL);
	return 0;
}

static int group_teardown(void **state)
{
	server_stop(g);
	return 0;
}

/* ---- tests ---- */

static void test_initialize_and_methods(void **state)
{
	char *sid = open_session(g->port, "2025-06-18", false);
	char *ver = xasprintf("MCP-Protocol-Version: 2025-06-18\r\n");
	json_t *m;

	assert_int_equal(
	    post(g->port, sid, ver, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/list\"}", &m),
	    200);
	assert_true(json_array_size(json_object_get(json_object_get(m, "result"), "tools")) > 0);
	assert_int_equal(json_integer_value(json_object_get(m, "id")), 2);
	json_decref(m);

	assert_int_equal(
	    post(g->port, sid, ver, "{\"jsonrpc\":\"2.0\",\"id\":\"p\",\"method\":\"ping\"}", &m),
	    200);
	assert_true(json_is_object(json_object_get(m, "result")));
	json_decref(m);

	/* Unknown methods and tools are JSON-RPC errors, not HTTP ones. */
	assert_int_equal(
	    post(g->port, sid, ver, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"nope\"}", &m), 200);
	assert_int_equal(error_code(m), MCP_METHOD_NOT_FOUND);
	json_decref(m);
	assert_int_equal(post(g->port, sid, ver,
			      "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"tools/call\","
			      "\"params\":{\"name\":\"no_such_tool\",\"arguments\":{}}}",
			      &m),
			 200);
	assert_int_equal(error_code(m), MCP_INVALID_PARAMS);
	json_decref(m);

	/* Wrong types: valid JSON, not a valid message. */
	assert_int_equal(post(g->port, sid, ver, "42", &m), 200);
	assert_int_equal(error_code(m), MCP_INVALID_REQUEST);
	json_decref(m);
	assert_int_equal(post(g->port, sid, ver,
			      "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/call\","
			      "\"params\":{\"name\":7}}",
			      &m),
			 200);
	assert_int_equal(error_code(m), MCP_INVALID_PARAMS);
	json_decref(m);

	/* The header is optional: without it 2025-03-26 is assumed. */
	assert_int_equal(
	    post(g->port, sid, NULL, "{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"ping\"}", NULL),
	    200);
	free(ver);
	free(sid);
}

static void test_json_only_client(void **state)
{
	struct resp r;
	json_t *m;

	/* A client that accepts only JSON gets JSON. */
	request(g->port, "POST", "Accept: application/json\r\n" JSON_CT,
		INIT_BODY("2025-03-26", "{}"), &r);
	assert_int_equal(r.status, 200);
	m = resp_message(&r);
	assert_non_null(json_object_get(m, "result"));
	json_decref(m);
	resp_free(&r);
	/* No Accept at all: served anyway. */
	request(g->port, "POST", JSON_CT, INIT_BODY("2025-11-25", "{}"), &r);
	assert_int_equal(r.status, 200);
	m = resp_message(&r);
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(m, "result"), "protocolVersion")),
	    "2025-11-25");
	json_decref(m);
	resp_free(&r);
}

static void test_bad_requests(void **state)
{
	char *sid = open_session(g->port, "2025-06-18", false);
	char *h;
	struct resp r;
	json_t *m;

	/* Malformed JSON: 400 with a parse error, id null. */
	assert_int_equal(post(g->port, sid, NULL, "{\"jsonrpc\":", &m), 400);
	assert_int_equal(error_code(m), MCP_PARSE_ERROR);
	assert_true(json_is_null(json_object_get(m, "id")));
	json_decref(m);
	assert_int_equal(post(g->port, sid, NULL, "", NULL), 400);

	/* No session header on something other than initialize. */
	request(g->port, "POST", ACCEPT_BOTH JSON_CT,
		"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}", &r);
	assert_int_equal(r.status, 400);
	resp_free(&r);

	/* An unknown session. */
	assert_int_equal(post(g->port, "0123456789abcdef0123456789abcdef", NULL,
			      "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}", NULL),
			 404);

	/* A version we do not speak. */
	assert_int_equal(post(g->port, sid, "MCP-Protocol-Version: 1999-01-01\r\n",
			      "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}", NULL),
			 400);

	/* Not JSON. */
	h = xasprintf(ACCEPT_BOTH "Content-Type: text/plain\r\nMcp-Session-Id: %s\r\n", sid);
	request(g->port, "POST", h, "{}", &r);
	assert_int_equal(r.status, 415);
	resp_free(&r);
	free(h);

	/* Other methods and paths. */
	request(g->port, "PUT", JSON_CT, "{}", &r);
	assert_int_equal(r.status, 405);
	assert_non_null(strcasestr(r.head, "Allow: GET, POST, DELETE"));
	resp_free(&r);
	{
		struct conn *c = conn_open(g->port);
		const char *req = "GET /other HTTP/1.1\r\nHost: x\r\n\r\n";
		send_raw(c, req, strlen(req));
		read_head(c, &r);
		read_body(c, &r);
		assert_int_equal(r.status, 404);
		resp_free(&r);
		conn_close(c);
	}

	/* GET without Accept: text/event-stream. */
	h = xasprintf("Accept: application/json\r\nMcp-Session-Id: %s\r\n", sid);
	request(g->port, "GET", h, NULL, &r);
	assert_int_equal(r.status, 405);
	resp_free(&r);
	free(h);

	/* Origins: a foreign one is refused, a local one is fine. */
	request(g->port, "POST", ACCEPT_BOTH JSON_CT "Origin: http://evil.example\r\n",
		INIT_BODY("2025-06-18", "{}"), &r);
	assert_int_equal(r.status, 403);
	resp_free(&r);
	request(g->port, "POST", ACCEPT_BOTH JSON_CT "Origin: http://localhost.evil.example\r\n",
		INIT_BODY("2025-06-18", "{}"), &r);
	assert_int_equal(r.status, 403);
	resp_free(&r);
	h = xasprintf(ACCEPT_BOTH JSON_CT "Origin: http://localhost:%u\r\n", g->port);
	request(g->port, "POST", h, INIT_BODY("2025-06-18", "{}"), &r);
	assert_int_equal(r.status, 200);
	resp_free(&r);
	free(h);

	/* DELETE ends the session; after it the id is unknown. */
	h = xasprintf("Mcp-Session-Id: %s\r\n", sid);
	request(g->port, "DELETE", h, NULL, &r);
	assert_int_equal(r.status, 200);
	resp_free(&r);
	request(g->port, "DELETE", h, NULL, &r);
	assert_int_equal(r.status, 404);
	resp_free(&r);
	free(h);
	assert_int_equal(
	    post(g->port, sid, NULL, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}", NULL),
	    404);
	free(sid);
}

static void test_oversized(void **state)
{
	struct resp r;
	struct conn *c;
	char *h;

	/* A client that waits for 100 Continue is refused on its Content-Length. */
	c = conn_open(g->port);
	h = xasprintf("POST /mcp HTTP/1.1\r\nHost: x\r\n" ACCEPT_BOTH JSON_CT
		      "Expect: 100-continue\r\nContent-Length: %u\r\n\r\n",
		      MCP_MAX_MESSAGE + 1);
	send_raw(c, h, strlen(h));
	free(h);
	read_head(c, &r);
	read_body(c, &r);
	assert_int_equal(r.status, 413);
	resp_free(&r);
	conn_close(c);

	/* Chunked, with no length up front: counted as it comes. */
	{
		size_t chunk = 1u << 20;
		char *data = xmalloc(chunk);
		char line[32];

		memset(data, ' ', chunk);
		c = conn_open(g->port);
		h = "POST /mcp HTTP/1.1\r\nHost: x\r\n" ACCEPT_BOTH JSON_CT
		    "Transfer-Encoding: chunked\r\n\r\n";
		send_raw(c, h, strlen(h));
		for (unsigned i = 0; i < MCP_MAX_MESSAGE / chunk + 1; i++) {
			snprintf(line, sizeof(line), "%zx\r\n", chunk);
			send_raw(c, line, strlen(line));
			send_raw(c, data, chunk);
			send_raw(c, "\r\n", 2);
		}
		send_raw(c, "0\r\n\r\n", 5);
		free(data);
		read_head(c, &r);
		read_body(c, &r);
		assert_int_equal(r.status, 413);
		resp_free(&r);
		conn_close(c);
	}
}

static void test_client_leaves_midway(void **state)
{
	struct resp r;
	struct conn *c;
	const char *h;

	/* Headers promise a body that never comes. */
	c = conn_open(g->port);
	h = "POST /mcp HTTP/1.1\r\nHost: x\r\n" ACCEPT_BOTH JSON_CT "Content-Length: 100\r\n\r\n{";
	send_raw(c, h, strlen(h));
	conn_close(c);
	/* Half a request line. */
	c = conn_open(g->port);
	send_raw(c, "POST /m", 7);
	conn_close(c);
	/* Still serving. */
	request(g->port, "POST", ACCEPT_BOTH JSON_CT, INIT_BODY("2025-06-18", "{}"), &r);
	assert_int_equal(r.status, 200);
	resp_free(&r);
}

#define RED_CALL                                                                                   \
	"{\"jsonrpc\":\"2.0\",\"id\":10,\"method\":\"tools/call\",\"params\":{\"name\":"           \
	"\"sandbox_destroy\",\"arguments\":{\"sandbox_id\":\"sb-000000000000\"}}}"

/* Reads SSE chunks until one holds needle; returns everything read. */
static char *read_until(struct conn *c, const char *needle)
{
	char *all = xstrdup(""), *d;
	size_t len = 0, n;

	while (strstr(all, needle) == NULL) {
		d = read_chunk(c, &n);
		if (d == NULL)
			fail_msg("stream ended before \"%s\": %s", needle, all);
		all = xrealloc(all, len + n + 1);
		memcpy(all + len, d, n + 1);
		len += n;
		free(d);
	}
	return all;
}

/* The first SSE message whose data line holds needle, parsed. */
static json_t *sse_message(const char *sse, const char *needle)
{
	for (const char *p = strstr(sse, "data: "); p != NULL; p = strstr(p + 6, "data: ")) {
		size_t n = strcspn(p + 6, "\n");
		char *line = strndup(p + 6, n);
		json_t *m = strstr(line, needle) != NULL ? json_loads(line, 0, NULL) : NULL;

		free(line);
		if (m != NULL)
			return m;
	}
	fail_msg("no message with %s in %s", needle, sse);
	return NULL;
}

/* The id of the elicitation/create in sse, as JSON (a new string): random, not a counter. */
static char *elicitation_id(const char *sse)
{
	json_t *m = sse_message(sse, "\"method\":\"elicitation/create\"");
	char *id;

	assert_true(json_is_string(json_object_get(m, "id")));
	id = json_dumps(json_object_get(m, "id"), JSON_ENCODE_ANY);
	assert_true(strlen(id) >= 34);
	json_decref(m);
	return id;
}

/* A call that waits on the human: its elicitation comes on its own POST stream. */
static void test_elicitation_on_post_stream(void **state)
{
	char *sid = open_session(g->port, "2025-06-18", true);
	char *h = session_headers(sid, "MCP-Protocol-Version: 2025-06-18\r\n");
	char *sse, *answer;
	struct conn *c = conn_open(g->port);
	struct resp r;
	json_t *m;
	char *eid;

	send_request(c, "POST", h, RED_CALL);
	read_head(c, &r);
	assert_int_equal(r.status, 200);
	assert_true(r.chunked);
	free(r.head);
	sse = read_until(c, "elicitation/create");
	assert_non_null(strstr(sse, "event: message\n"));
	assert_non_null(strstr(sse, "id: "));
	eid = elicitation_id(sse);
	free(sse);

	/* The user declines; the answer is a response: 202. */
	answer =
	    xasprintf("{\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":{\"action\":\"decline\"}}", eid);
	free(eid);
	assert_int_equal(post(g->port, sid, NULL, answer, NULL), 202);
	free(answer);

	/* The call's result comes on the first stream, which then ends. */
	sse = read_until(c, "\"id\":10");
	{
		size_t n;
		char *d;
		while ((d = read_chunk(c, &n)) != NULL)
			free(d);
	}
	m = sse_message(sse, "\"id\":10");
	assert_true(json_is_true(json_object_get(json_object_get(m, "result"), "isError")));
	free(sse);
	conn_close(c);
	json_decref(m);
	free(h);
	free(sid);
}

/* A JSON-only POST: its elicitation goes to the GET stream; a second GET is refused. */
static void test_get_stream(void **state)
{
	char *sid = open_session(g->port, "2025-06-18", true);
	char *hget = xasprintf("Accept: text/event-stream\r\nMcp-Session-Id: %s\r\n", sid);
	char *hjson =
	    xasprintf("Accept: application/json\r\n" JSON_CT "Mcp-Session-Id: %s\r\n", sid);
	struct conn *get = conn_open(g->port), *call = conn_open(g->port);
	struct resp r, r2;
	char *sse, *answer, *ct;
	json_t *m;
	char *eid;

	send_request(get, "GET", hget, NULL);
	read_head(get, &r);
	assert_int_equal(r.status, 200);
	ct = resp_header(&r, "Content-Type");
	assert_string_equal(ct, "text/event-stream");
	free(ct);
	resp_free(&r);
	request(g->port, "GET", hget, NULL, &r2);
	assert_int_equal(r2.status, 409);
	resp_free(&r2);

	send_request(call, "POST", hjson, RED_CALL);
	sse = read_until(get, "elicitation/create");
	eid = elicitation_id(sse);
	free(sse);
	answer =
	    xasprintf("{\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":{\"action\":\"decline\"}}", eid);
	free(eid);
	assert_int_equal(post(g->port, sid, NULL, answer, NULL), 202);
	free(answer);
	read_head(call, &r);
	read_body(call, &r);
	assert_int_equal(r.status, 200);
	m = resp_message(&r);
	assert_int_equal(json_integer_value(json_object_get(m, "id")), 10);
	assert_true(json_is_true(json_object_get(json_object_get(m, "result"), "isError")));
	json_decref(m);
	resp_free(&r);
	conn_close(call);
	conn_close(get);
	free(hget);
	free(hjson);
	free(sid);
}

/* Waits up to 10 s for the session to be gone. */
static void assert_session_goes(unsigned port, const char *sid)
{
	for (int i = 0; i < 100; i++) {
		if (post(port, sid, NULL, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}",
			 NULL) == 404)
			return;
		usleep(100 * 1000);
	}
	fail_msg("session %s is still there", sid);
}

/* The client vanishes during a call with no GET stream: its session is reaped. */
static void test_disconnect_mid_call(void **state)
{
	char *sid = open_session(g->port, "2025-06-18", true);
	char *h = session_headers(sid, NULL);
	struct conn *c = conn_open(g->port);
	struct resp r;
	char *sse;

	send_request(c, "POST", h, RED_CALL);
	read_head(c, &r);
	assert_int_equal(r.status, 200);
	resp_free(&r);
	sse = read_until(c, "elicitation/create");
	free(sse);
	conn_close(c);
	assert_session_goes(g->port, sid);
	free(h);
	free(sid);
	/* And the server goes on. */
	free(open_session(g->port, "2025-11-25", false));
}

static void test_token(void **state)
{
	struct mcp_http_opts o = {.bind = "127.0.0.1:0", .token = "s3cret-token-for-tests"};
	struct server *s = server_start(&o);
	struct resp r;

	request(s->port, "POST", ACCEPT_BOTH JSON_CT, INIT_BODY("2025-06-18", "{}"), &r);
	assert_int_equal(r.status, 401);
	assert_non_null(strcasestr(r.head, "WWW-Authenticate: Bearer"));
	resp_free(&r);
	request(s->port, "POST",
		ACCEPT_BOTH JSON_CT "Authorization: Bearer s3cret-token-for-test\r\n",
		INIT_BODY("2025-06-18", "{}"), &r);
	assert_int_equal(r.status, 401);
	resp_free(&r);
	request(s->port, "POST",
		ACCEPT_BOTH JSON_CT "Authorization: Bearer s3cret-token-for-tests-and-more\r\n",
		INIT_BODY("2025-06-18", "{}"), &r);
	assert_int_equal(r.status, 401);
	resp_free(&r);
	request(s->port, "POST", ACCEPT_BOTH JSON_CT "Authorization: Basic Zm9vOmJhcg==\r\n",
		INIT_BODY("2025-06-18", "{}"), &r);
	assert_int_equal(r.status, 401);
	resp_free(&r);
	request(s->port, "POST",
		ACCEPT_BOTH JSON_CT "Authorization: Bearer s3cret-token-for-tests\r\n",
		INIT_BODY("2025-06-18", "{}"), &r);
	assert_int_equal(r.status, 200);
	resp_free(&r);
	server_stop(s);
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	assert_non_null(d);
	while (readdir(d) != NULL)
		n++;
	closedir(d);
	return n;
}

static void test_bind_rules(void **state)
{
	struct mcp_server_opts so = {0};
	struct mcp_server *srv;
	struct mcp_http *h = NULL;
	struct lg_err *err = NULL;
	struct policy *p = policy_default();
	struct approval_broker *b = approval_broker_new(5, NULL);
	static const char *const bad[] = {"127.0.0.1", "127.0.0.1:99999", "[::1:80",
					  "::1:80",    "example.com:80",  ":80"};

	so.policy = p;
	so.broker = b;
	assert_int_equal(mcp_server_new(&so, &srv, &err), 0);
	int fds = count_fds();

	struct mcp_http_opts o = {.bind = "0.0.0.0:0"};
	assert_true(mcp_http_start(srv, &o, &h, &err) < 0);
	assert_null(h);
	assert_non_null(strstr(err->msg, "token"));
	lg_err_free(&err);
	o.token = "";
	assert_true(mcp_http_start(srv, &o, &h, &err) < 0);
	lg_err_free(&err);

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		o.bind = bad[i];
		assert_true(mcp_http_start(srv, &o, &h, &err) < 0);
		assert_non_null(err);
		lg_err_free(&err);
	}

	/* With a token, any address; IPv6 loopback needs none. */
	o.bind = "0.0.0.0:0";
	o.token = "t";
	assert_int_equal(mcp_http_start(srv, &o, &h, &err), 0);
	mcp_http_stop(h);
	o.bind = "[::1]:0";
	o.token = NULL;
	if (mcp_http_start(srv, &o, &h, &err) == 0)
		mcp_http_stop(h);
	else
		lg_err_free(&err); /* no IPv6 here */
	o.bind = "localhost:0";
	assert_int_equal(mcp_http_start(srv, &o, &h, &err), 0);
	mcp_http_stop(h);
	/* Port in use: a clear error. */
	{
		struct mcp_http *h2 = NULL;
		char *bind;

		assert_int_equal(mcp_http_start(srv, &o, &h, &err), 0);
		bind = xasprintf("127.0.0.1:%u", mcp_http_port(h));
		o.bind = bind;
		assert_true(mcp_http_start(srv, &o, &h2, &err) < 0);
		assert_non_null(strstr(err->msg, "bind 127.0.0.1:"));
		lg_err_free(&err);
		mcp_http_stop(h);
		free(bind);
	}
	/*
	 * Nothing leaked: MHD closed the listening sockets we gave it.  (<=:
	 * the shared server may close connections of earlier tests meanwhile.)
	 */
	assert_true(count_fds() <= fds);

	mcp_server_free(srv);
	approval_broker_free(b);
	policy_free(p);
}

static void test_origin_list_and_idle(void **state)
{
	static const char *const origins[] = {"https://app.example", NULL};
	struct mcp_http_opts o = {
	    .bind = "127.0.0.1:0", .allowed_origins = origins, .session_idle_s = 1};
	struct server *s = server_start(&o);
	struct resp r;
	char *sid;

	request(s->port, "POST", ACCEPT_BOTH JSON_CT "Origin: https://APP.example\r\n",
		INIT_BODY("2025-06-18", "{}"), &r);
	assert_int_equal(r.status, 200);
	resp_free(&r);
	/* With a list, even local origins must be on it. */
	request(s->port, "POST", ACCEPT_BOTH JSON_CT "Origin: http://localhost\r\n",
		INIT_BODY("2025-06-18", "{}"), &r);
	assert_int_equal(r.status, 403);
	resp_free(&r);

	/* Every request keeps a session alive: one look after it has been idle. */
	sid = open_session(s->port, "2025-06-18", false);
	usleep(2500 * 1000);
	assert_int_equal(
	    post(s->port, sid, NULL, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}", NULL),
	    404);
	free(sid);
	server_stop(s);
}

/*
 * Sessions are capped: an initialize over the cap is a 503 with a JSON-RPC
 * error (its own id) and opens nothing; ending a session frees its slot.
 */
static void test_session_cap(void **state)
{
	struct mcp_http_opts o = {.bind = "127.0.0.1:0", .max_sessions = 2};
	struct server *s = server_start(&o);
	char *a = open_session(s->port, "2025-06-18", false);
	char *b = open_session(s->port, "2025-06-18", false);
	char *sid, *ra;
	struct resp r;
	json_t *m;

	for (int i = 0; i < 3; i++) {
		request(s->port, "POST", ACCEPT_BOTH JSON_CT, INIT_BODY("2025-06-18", "{}"), &r);
		assert_int_equal(r.status, 503);
		assert_null(resp_header(&r, "Mcp-Session-Id"));
		ra = resp_header(&r, "Retry-After");
		assert_non_null(ra);
		free(ra);
		m = resp_message(&r);
		assert_int_equal(error_code(m), -32000);
		assert_int_equal(json_integer_value(json_object_get(m, "id")), 1);
		assert_non_null(strstr(
		    json_string_value(json_object_get(json_object_get(m, "error"), "message")),
		    "too many sessions"));
		json_decref(m);
		resp_free(&r);
	}
	/* The sessions there are still served. */
	assert_int_equal(
	    post(s->port, a, NULL, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\"}", NULL),
	    200);
	char *h = session_headers(b, NULL);
	request(s->port, "DELETE", h, NULL, &r);
	free(h);
	assert_int_equal(r.status, 200);
	resp_free(&r);
	sid = open_session(s->port, "2025-11-25", false);
	free(sid);
	free(a);
	free(b);
	server_stop(s);
}

/* Stopping with a GET stream and a call in flight ends both. */
static void test_stop_with_streams(void **state)
{
	struct server *s = server_start(NULL);
	char *sid = open_session(s->port, "2025-06-18", true);
	char *hget = xasprintf("Accept: text/event-stream\r\nMcp-Session-Id: %s\r\n", sid);
	char *h = session_headers(sid, NULL);
	struct conn *get = conn_open(s->port), *call = conn_open(s->port);
	struct resp r;

	send_request(get, "GET", hget, NULL);
	read_head(get, &r);
	assert_int_equal(r.status, 200);
	resp_free(&r);
	send_request(call, "POST", h, RED_CALL);
	read_head(call, &r);
	assert_int_equal(r.status, 200);
	resp_free(&r);
	free(read_until(call, "elicitation/create"));
	server_stop(s);
	conn_close(get);
	conn_close(call);
	free(hget);
	free(h);
	free(sid);
}

/* ---- remote sessions: the transport in front of a service's MCP socket ---- */

static int remote_setup(void **state)
{
	g = server_start_remote();
	return 0;
}

/* Starts RED_CALL in session sid; returns the open stream and the elicitation's id. */
static struct conn *start_red_call(const char *sid, char **eid)
{
	char *h = session_headers(sid, NULL);
	struct conn *c = conn_open(g->port);
	struct resp r;
	char *sse;

	send_request(c, "POST", h, RED_CALL);
	read_head(c, &r);
	assert_int_equal(r.status, 200);
	resp_free(&r);
	sse = read_until(c, "elicitation/create");
	*eid = elicitation_id(sse);
	free(sse);
	free(h);
	return c;
}

/* The result of RED_CALL on c (declined: isError), with the client's id 10. */
static void finish_red_call(struct conn *c)
{
	char *sse = read_until(c, "\"id\":10");
	json_t *m = sse_message(sse, "\"id\":10");
	size_t n;
	char *d;

	assert_true(json_is_true(json_object_get(json_object_get(m, "result"), "isError")));
	json_decref(m);
	free(sse);
	while ((d = read_chunk(c, &n)) != NULL)
		free(d);
	conn_close(c);
}

/*
 * Two sessions, each with a call under the same id 10, each waiting on its
 * elicitation: each gets its own elicitation on its own stream, session B
 * answering A's elicitation decides nothing (it reaches only B's
 * connection), and each result comes back under id 10 to its own stream.
 */
static void test_remote_sessions_apart(void **state)
{
	char *a = open_session(g->port, "2025-06-18", true);
	char *b = open_session(g->port, "2025-06-18", true);
	char *ea, *eb, *ans;
	struct conn *ca, *cb;

	assert_string_not_equal(a, b);
	ca = start_red_call(a, &ea);
	cb = start_red_call(b, &eb);
	assert_string_not_equal(ea, eb);

	/* B forwards A's elicitation id: B's service session drops it. */
	ans = xasprintf("{\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":{\"action\":\"accept\","
			"\"content\":{\"approve\":true}}}",
			ea);
	assert_int_equal(post(g->port, b, NULL, ans, NULL), 202);
	free(ans);
	/* B declines its own, then A declines its own: both results are denials. */
	ans = xasprintf("{\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":{\"action\":\"decline\"}}", eb);
	assert_int_equal(post(g->port, b, NULL, ans, NULL), 202);
	free(ans);
	finish_red_call(cb);
	ans = xasprintf("{\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":{\"action\":\"decline\"}}", ea);
	assert_int_equal(post(g->port, a, NULL, ans, NULL), 202);
	free(ans);
	finish_red_call(ca);

	/* A session id of the transport is not the service's, and B's does not open A's. */
	assert_int_equal(post(g->port, "0123456789abcdef0123456789abcdef", NULL,
			      "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}", NULL),
			 404);
	free(ea);
	free(eb);
	free(a);
	free(b);
}

/*
 * A cancellation names the client's id.  The cancelled call gets no
 * response (MCP), and is no longer a call in progress: a new call under the
 * same id gets its elicitation on its own stream (with two calls in
 * progress it would go to the GET stream, and there is none).
 */
static void test_remote_cancel(void **state)
{
	char *sid = open_session(g->port, "2025-06-18", true);
	char *eid, *eid2, *ans;
	struct conn *c = start_red_call(sid, &eid), *c2;

	assert_int_equal(post(g->port, sid, NULL,
			      "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\","
			      "\"params\":{\"requestId\":10}}",
			      NULL),
			 202);
	c2 = start_red_call(sid, &eid2);
	assert_string_not_equal(eid, eid2);
	ans =
	    xasprintf("{\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":{\"action\":\"decline\"}}", eid2);
	assert_int_equal(post(g->port, sid, NULL, ans, NULL), 202);
	free(ans);
	finish_red_call(c2);
	conn_close(c);
	free(eid);
	free(eid2);
	free(sid);
}

static void test_remote_metrics(void **state)
{
	struct resp r;

	request(g->port, "GET", "", NULL, &r);
	resp_free(&r);
	{
		struct conn *c = conn_open(g->port);
		const char *req = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
		send_raw(c, req, strlen(req));
		read_head(c, &r);
		read_body(c, &r);
		assert_int_equal(r.status, 404);
		assert_non_null(strstr(r.body, "service"));
		resp_free(&r);
		conn_close(c);
	}
}

/* ---- a fake service: what a broken or hostile one may send ---- */

struct fake {
	int listen_fd;
	char *dir, *path;
	pthread_t thread;
	int mode; /* FAKE_* */
	bool saw_eof;
};

enum { FAKE_HUGE_LINE, FAKE_GARBAGE_THEN_CLOSE };

/* Reads one line from fd into a new string; NULL at EOF. */
static char *fd_line(int fd)
{
	size_t n = 0, cap = 256;
	char *s = xmalloc(cap), ch;

	for (;;) {
		ssize_t r = read(fd, &ch, 1);
		if (r <= 0) {
			free(s);
			return NULL;
		}
		if (ch == '\n')
			break;
		if (n + 2 > cap)
			s = xrealloc(s, cap *= 2);
		s[n++] = ch;
	}
	s[n] = '\0';
	return s;
}

/* Answers request line with result (a JSON object text). */
static void fake_answer(int fd, const char *line, const char *result)
{
	json_t *req = json_loads(line, 0, NULL);
	char *out;

	assert_non_null(req);
	/* The transport's id, not the client's 1. */
	assert_true(json_is_integer(json_object_get(req, "id")));
	out = xasprintf("{\"jsonrpc\":\"2.0\",\"id\":%lld,\"result\":%s}\n",
			(long long)json_integer_value(json_object_get(req, "id")), result);
	assert_int_equal(lg_write_all(fd, out, strlen(out)), (ssize_t)strlen(out));
	free(out);
	json_decref(req);
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	int fd = accept(f->listen_fd, NULL, NULL);
	char *line;

	if (fd < 0)
		return NULL;
	line = fd_line(fd); /* initialize */
	if (line != NULL)
		fake_answer(fd, line, "{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{}}");
	free(line);
	line = fd_line(fd); /* notifications/initialized */
	free(line);
	line = fd_line(fd); /* ping */
	if (line != NULL && f->mode == FAKE_HUGE_LINE) {
		size_t n = MCP_MAX_MESSAGE + 100;
		char *big = xmalloc(n);

		memset(big, 'x', n);
		/* The reader must stop at the bound, not wait for the newline. */
		(void)lg_write_all(fd, big, n);
		free(big);
	} else if (line != NULL) {
		const char *junk =
		    "not json\n[1,2]\n{\"jsonrpc\":\"2.0\",\"id\":999,\"result\":{}}\n"
		    "{\"jsonrpc\":\"2.0\",\"id\":\"x\",\"result\":{}}\n";
		(void)lg_write_all(fd, junk, strlen(junk));
		fake_answer(fd, line, "{}");
		free(line);
		line = fd_line(fd); /* a second ping: the service goes away instead */
	}
	free(line);
	if (f->mode == FAKE_HUGE_LINE) {
		/* The transport ends the connection: EOF here. */
		char *rest;
		while ((rest = fd_line(fd)) != NULL)
			free(rest);
		f->saw_eof = true;
	}
	close(fd);
	return NULL;
}

static struct fake *fake_start(int mode)
{
	struct fake *f = xzalloc(sizeof(*f));
	struct lg_err *err = NULL;
	char tmpl[] = "/tmp/lg-test-fake.XXXXXX";
	dev_t dev;
	ino_t ino;

	assert_non_null(mkdtemp(tmpl));
	f->dir = xstrdup(tmpl);
	f->path = xasprintf("%s/mcp.sock", f->dir);
	f->mode = mode;
	f->listen_fd = lg_usock_listen(f->path, &dev, &ino, &err);
	assert_true(f->listen_fd >= 0);
	lg_set_nonblock(f->listen_fd, false);
	assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
	return f;
}

/* Returns whether the transport ended the connection (FAKE_HUGE_LINE). */
static bool fake_stop(struct fake *f)
{
	bool eof;

	pthread_join(f->thread, NULL);
	eof = f->saw_eof;
	close(f->listen_fd);
	unlink(f->path);
	rmdir(f->dir);
	free(f->path);
	free(f->dir);
	free(f);
	return eof;
}

static struct mcp_http *http_for(const char *path, unsigned *port)
{
	struct mcp_http_opts o = {.bind = "127.0.0.1:0", .service_sock = path};
	struct lg_err *err = NULL;
	struct mcp_http *h;

	if (mcp_http_start(NULL, &o, &h, &err) < 0)
		fail_msg("mcp_http_start: %s", err->msg);
	*port = mcp_http_port(h);
	return h;
}

#define PING "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}"

/* A line over MCP_MAX_MESSAGE from the service ends that session, with an error to the request. */
static void test_remote_huge_line(void **state)
{
	struct fake *f = fake_start(FAKE_HUGE_LINE);
	unsigned port;
	struct mcp_http *h = http_for(f->path, &port);
	char *sid = open_session(port, "2025-06-18", false);
	json_t *m;

	assert_int_equal(post(port, sid, NULL, PING, &m), 200);
	assert_int_equal(error_code(m), MCP_INTERNAL_ERROR);
	assert_non_null(
	    strstr(json_string_value(json_object_get(json_object_get(m, "error"), "message")),
		   "size limit"));
	assert_int_equal(json_integer_value(json_object_get(m, "id")), 1);
	json_decref(m);
	assert_session_goes(port, sid);
	assert_true(fake_stop(f));
	mcp_http_stop(h);
	free(sid);
}

/* Garbage and responses to no request are dropped; a service that goes away ends the session. */
static void test_remote_garbage_and_gone(void **state)
{
	struct fake *f = fake_start(FAKE_GARBAGE_THEN_CLOSE);
	unsigned port;
	struct mcp_http *h = http_for(f->path, &port);
	char *sid = open_session(port, "2025-06-18", false);
	json_t *m;

	assert_int_equal(post(port, sid, NULL, PING, &m), 200);
	assert_true(json_is_object(json_object_get(m, "result")));
	assert_int_equal(json_integer_value(json_object_get(m, "id")), 1);
	json_decref(m);
	/* The service closes on the second ping: answered here, then the session is gone. */
	assert_int_equal(post(port, sid, NULL, PING, &m), 200);
	assert_int_equal(error_code(m), MCP_INTERNAL_ERROR);
	json_decref(m);
	assert_session_goes(port, sid);
	fake_stop(f);
	/* No service at all: an initialize gets 503 and opens nothing. */
	{
		struct resp r;
		request(port, "POST", ACCEPT_BOTH JSON_CT, INIT_BODY("2025-06-18", "{}"), &r);
		assert_int_equal(r.status, 503);
		assert_null(resp_header(&r, "Mcp-Session-Id"));
		resp_free(&r);
	}
	mcp_http_stop(h);
	free(sid);
}

/* The line reader of mcp/sock.h: split reads, CRLF, the bound, EOF. */
static void test_lines(void **state)
{
	int sv[2];
	struct mcp_lines l;
	char *line, *big;
	size_t len;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	mcp_lines_init(&l, 16);
	assert_int_equal(write(sv[1], "ab", 2), 2);
	assert_int_equal(write(sv[1], "c\r\n\n0123456789abcdef\n", 22), 22);
	assert_int_equal(mcp_lines_next(&l, sv[0], &line, &len), 1);
	assert_string_equal(line, "abc");
	assert_int_equal(len, 3);
	assert_int_equal(mcp_lines_next(&l, sv[0], &line, &len), 1);
	assert_int_equal(len, 0);
	/* Exactly the bound. */
	assert_int_equal(mcp_lines_next(&l, sv[0], &line, &len), 1);
	assert_string_equal(line, "0123456789abcdef");
	/* One past it, with its newline. */
	assert_int_equal(write(sv[1], "0123456789abcdefg\n", 18), 18);
	assert_int_equal(mcp_lines_next(&l, sv[0], &line, &len), -E2BIG);
	mcp_lines_free(&l);

	/* Past it without a newline: found without waiting for one. */
	mcp_lines_init(&l, 16);
	assert_int_equal(write(sv[1], "0123456789abcdefghij", 20), 20);
	assert_int_equal(mcp_lines_next(&l, sv[0], &line, &len), -E2BIG);
	mcp_lines_free(&l);

	/* A large bound, a line arriving in many reads; EOF drops an unfinished line. */
	mcp_lines_init(&l, 1u << 20);
	big = xmalloc(300001);
	memset(big, 'y', 300000);
	big[300000] = '\n';
	{
		pid_t pid = fork();
		if (pid == 0) {
			(void)lg_write_all(sv[1], big, 300001);
			(void)lg_write_all(sv[1], "tail", 4);
			_exit(0);
		}
		close(sv[1]);
		assert_int_equal(mcp_lines_next(&l, sv[0], &line, &len), 1);
		assert_int_equal(len, 300000);
		assert_int_equal(mcp_lines_next(&l, sv[0], &line, &len), 0);
		waitpid(pid, NULL, 0);
	}
	free(big);
	mcp_lines_free(&l);
	close(sv[0]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_initialize_and_methods),
	    cmocka_unit_test(test_json_only_client),
	    cmocka_unit_test(test_bad_requests),
	    cmocka_unit_test(test_oversized),
	    cmocka_unit_test(test_client_leaves_midway),
	    cmocka_unit_test(test_elicitation_on_post_stream),
	    cmocka_unit_test(test_get_stream),
	    cmocka_unit_test(test_disconnect_mid_call),
	    /* After all of that the shared server still serves. */
	    cmocka_unit_test(test_initialize_and_methods),
	    cmocka_unit_test(test_token),
	    cmocka_unit_test(test_bind_rules),
	    cmocka_unit_test(test_origin_list_and_idle),
	    cmocka_unit_test(test_stop_with_streams),
	    cmocka_unit_test(test_session_cap),
	};

	/* The same behaviour with every session carried to a service's MCP socket. */
	const struct CMUnitTest remote[] = {
	    cmocka_unit_test(test_initialize_and_methods),
	    cmocka_unit_test(test_json_only_client),
	    cmocka_unit_test(test_bad_requests),
	    cmocka_unit_test(test_client_leaves_midway),
	    cmocka_unit_test(test_elicitation_on_post_stream),
	    cmocka_unit_test(test_get_stream),
	    cmocka_unit_test(test_disconnect_mid_call),
	    cmocka_unit_test(test_remote_sessions_apart),
	    cmocka_unit_test(test_remote_cancel),
	    cmocka_unit_test(test_remote_metrics),
	    cmocka_unit_test(test_initialize_and_methods),
	    cmocka_unit_test(test_remote_huge_line),
	    cmocka_unit_test(test_remote_garbage_and_gone),
	    cmocka_unit_test(test_lines),
	};
	int failed;

	lg_log_init(); /* LUMINAGUARD_LOG=debug shows the transport's side */
	failed = cmocka_run_group_tests_name("local", tests, group_setup, group_teardown);
	return failed + cmocka_run_group_tests_name("remote", remote, remote_setup, group_teardown);
}
