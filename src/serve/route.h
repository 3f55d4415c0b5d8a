/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The HTTP API's request line, parsed without libmicrohttpd: which route a
 * path names, which methods it takes, and the query values the routes
 * read (mode, flags) and the X-Request-Id a client may send.  Pure
 * functions of untrusted strings, fuzzed by fuzz/fuzz_serve_route.c.
 */
#ifndef LG_SERVE_ROUTE_H
#define LG_SERVE_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

enum lg_route {
	LG_ROUTE_NONE,	    /* no such route: 404 */
	LG_ROUTE_HEALTHZ,   /* /healthz */
	LG_ROUTE_METRICS,   /* /metrics */
	LG_ROUTE_SANDBOXES, /* /v1/sandboxes */
	LG_ROUTE_SANDBOX,   /* /v1/sandboxes/ID */
	LG_ROUTE_EXEC,	    /* /v1/sandboxes/ID/exec */
	LG_ROUTE_FILES,	    /* /v1/sandboxes/ID/files */
	LG_ROUTE_APPROVALS, /* /v1/approvals */
	LG_ROUTE_APPROVAL,  /* /v1/approvals/ID */
};

/* An id in a path: [A-Za-z0-9._-]{1,64} (sandbox ids are "sb-" and 12 hex digits). */
#define LG_ROUTE_ID_MAX 64

enum lg_method {
	LG_METHOD_GET = 1u << 0,
	LG_METHOD_POST = 1u << 1,
	LG_METHOD_PUT = 1u << 2,
	LG_METHOD_DELETE = 1u << 3,
};

struct lg_route_match {
	enum lg_route route;
	char id[LG_ROUTE_ID_MAX + 1]; /* for the routes with an ID, else "" */
};

/*
 * Parses a request path (without the query string).  A path that names no
 * route, or an ID outside [A-Za-z0-9._-]{1,64}, is LG_ROUTE_NONE.
 */
enum lg_route lg_route_parse(const char *path, struct lg_route_match *out);

/* The methods a route takes (a mask of enum lg_method); 0 for NONE. */
unsigned lg_route_methods(enum lg_route r);
/* The method's bit, or 0 for any other method. */
unsigned lg_route_method(const char *method);
/* "GET, POST" for an Allow header.  Static string. */
const char *lg_route_allow(enum lg_route r);

/* A client's X-Request-Id we keep: [A-Za-z0-9._-]{1,64}. */
bool lg_request_id_ok(const char *s);

/* A file mode in octal, 1 to 5 digits, at most 07777. */
int lg_route_parse_mode(const char *s, uint32_t *out);
/* A query flag: "1" or "true" is true, "0" or "false" false; else -EINVAL. */
int lg_route_parse_flag(const char *s, bool *out);

/*
 * `--http` HOST:PORT, [V6]:PORT or localhost:PORT; numeric only, so no
 * DNS.  host gets the host as written (brackets kept), for the origin.
 * -EINVAL if it is none of these.
 */
int lg_route_parse_bind(const char *spec, struct sockaddr_storage *sa, socklen_t *salen, char *host,
			size_t hostlen);

/* Whether a parsed bind address is loopback (127.0.0.0/8, ::1, ::ffff:127.x). */
bool lg_route_bind_loopback(const struct sockaddr_storage *sa);

#endif
