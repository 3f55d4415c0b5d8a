/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The host-side egress proxy.  A guest has no NIC; its only way out is an
 * HTTP proxy whose every connection is carried to the host as its own
 * stream (net/netmux.h) and served here: the host parses the request,
 * checks the destination against the allowlist, resolves the name itself,
 * refuses loopback / private / link-local / metadata addresses and the
 * host's own addresses unless the host's user allowed them by address (an
 * approval never does), dials, and relays.  Raw TCP, UDP and DNS from the
 * guest have no way out at all.
 */
#ifndef LG_NET_EGRESS_H
#define LG_NET_EGRESS_H

#include "common/err.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

/* ---- allowlist ---------------------------------------------------------- */

/*
 * Entries, comma-separated: HOST, HOST:PORT or HOST:*.  HOST is a DNS name
 * ("pypi.org"), a wildcard ("*.pypi.org": any name below it, not pypi.org
 * itself), an IPv4/IPv6 address ("10.0.0.5", "[fd00::1]") or a CIDR
 * ("10.0.0.0/24").  No port means 80 and 443.  Names match case-insensitively
 * and without a trailing dot.
 *
 * Every entry records who wrote it.  Entries the host's user wrote
 * (--net allow=, a policy file: lg_allowlist_parse, lg_allowlist_add) are
 * "host-written"; an address or CIDR entry among them is the explicit
 * permission that lets a destination in a forbidden range (loopback,
 * private, link-local, metadata, this host's own addresses) through.
 * Entries added because a human approved a guest's request
 * (lg_allowlist_add_approved) only save asking again: they never open a
 * forbidden range, because the human saw a destination the guest chose.
 */
struct lg_allowlist;

/*
 * Copies a DNS name of n bytes into out (lower case, one trailing dot
 * dropped) after checking it: labels of 1..63 characters of [A-Za-z0-9_-],
 * 253 in all.  0 or -EINVAL.  One definition for the allowlist and the
 * request parser, so both agree on what a name is.
 */
int lg_dns_name_canon(const char *s, size_t n, char *out, size_t out_len);

/*
 * The --net option: "none" (*allow = NULL) or "allow=LIST" (*allow points
 * into arg), LIST checked by lg_allowlist_parse(): -EINVAL with a one-line
 * error starting "--net: " for either.
 */
int lg_net_opt_parse(const char *arg, const char **allow, struct lg_err **err);

int lg_allowlist_parse(const char *spec, struct lg_allowlist **out, struct lg_err **err);
/* An empty allowlist: every destination goes to the proxy's ask (or is refused). */
struct lg_allowlist *lg_allowlist_new(void);
/* Adds one host-written entry (same syntax). */
int lg_allowlist_add(struct lg_allowlist *al, const char *entry, struct lg_err **err);
/*
 * Adds one entry a human approved at run time (same syntax): it matches
 * in lg_allowlist_match_host, never in lg_allowlist_match_addr.
 */
int lg_allowlist_add_approved(struct lg_allowlist *al, const char *entry, struct lg_err **err);
/*
 * Does al hold an address or CIDR entry?  Those are what let a guest into a
 * forbidden range (loopback, private, this host's own addresses): a front
 * end that takes allowlists from less trusted callers than the host's user
 * (the service's API) accepts names only.
 */
bool lg_allowlist_has_addresses(const struct lg_allowlist *al);
/* Does the name (or address literal) and port match an entry, of either origin? */
bool lg_allowlist_match_host(const struct lg_allowlist *al, const char *host, uint16_t port);
/*
 * Is this resolved address (and its port: sa is a sockaddr_in or
 * sockaddr_in6) explicitly allowed by a host-written address/CIDR entry?
 * Approved entries do not count: this is what opens forbidden ranges.
 */
bool lg_allowlist_match_addr(const struct lg_allowlist *al, const struct sockaddr *sa);
/* The entries as given, ", "-joined; approved ones marked " (approved)".  New string. */
char *lg_allowlist_str(const struct lg_allowlist *al);
void lg_allowlist_free(struct lg_allowlist *al);

/*
 * Is sa in a range a sandbox must not reach by default: unspecified,
 * loopback, RFC 1918 private, CGNAT 100.64/10, link-local (incl. the
 * 169.254.169.254 metadata address), multicast, broadcast, reserved,
 * IPv6 ULA / link-local / loopback, and IPv4-mapped or -compatible forms of
 * all of these?  If so, *why names the range.
 */
bool lg_addr_forbidden(const struct sockaddr *sa, const char **why);

/*
 * Is sa (IPv4, IPv6, or IPv4-mapped IPv6) an address of one of this
 * host's own network interfaces (getifaddrs, asked on every call: they
 * change)?  Connecting there reaches the host's services bound to that
 * address or to the wildcard, whatever range it is in.
 */
bool lg_addr_on_host(const struct sockaddr *sa);

/*
 * One sentence for an approval card about a destination the guest asked
 * for, saying what approving it can and cannot open ("a host name: ...
 * refused whatever the answer if it resolves to this host ...").  Static
 * string.  Destinations an approval can never open are refused before
 * anyone is asked, so they get no card.
 */
const char *lg_egress_dest_note(const char *host);

/* ---- request parsing (untrusted bytes from the guest; fuzzed) ----------- */

enum lg_http_kind { LG_HTTP_CONNECT, LG_HTTP_FORWARD };

#define LG_HTTP_MAX_HEAD    16384 /* request line + headers */
#define LG_HTTP_MAX_HEADERS 100
#define LG_HTTP_MAX_LINE    8192

struct lg_http_req {
	enum lg_http_kind kind;
	char method[16];
	char host[256]; /* lower case, no brackets for IPv6, no trailing dot */
	uint16_t port;
	char path[4096]; /* origin-form for FORWARD ("/x?y"), "" for CONNECT */
	size_t head_len; /* bytes of buf the head took, including the blank line */
	int http_minor;	 /* HTTP/1.0 or HTTP/1.1 */
	/* Request body framing (FORWARD): Content-Length, or -1; chunked. */
	int64_t content_length;
	bool chunked;
	bool has_host;	   /* a Host header was given (and agreed) */
	const char *error; /* on failure: why, for the 400 answer (static) */
};

/*
 * Parses a proxy request head: "CONNECT host:port HTTP/1.1" or
 * "METHOD http://host[:port]/path HTTP/1.x" with a Host header that must
 * agree.  Returns head_len > 0 when complete, 0 when more bytes are needed,
 * -EINVAL (malformed), -EMSGSIZE (head over LG_HTTP_MAX_HEAD), -ENOTSUP
 * (not a proxy request, e.g. https:// absolute-form or origin-form, or a
 * Transfer-Encoding other than chunked).  Every line must end in CRLF: a
 * bare CR or LF, a NUL, obsolete line folding or whitespace before a
 * header's colon is -EINVAL (each is a request-smuggling or header-injection
 * vector when two parsers disagree about where a line ends).
 */
int lg_http_parse_request(const char *buf, size_t len, struct lg_http_req *out);

/*
 * The head to send upstream for a FORWARD request that
 * lg_http_parse_request() accepted from buf: origin-form request line,
 * hop-by-hop and proxy headers dropped (Connection and what it lists,
 * Proxy-Connection, Proxy-Authorization, Keep-Alive, TE, Trailer, Upgrade),
 * Host added when missing, and "Connection: close".  New string; *len set.
 */
char *lg_http_forward_head(const char *buf, const struct lg_http_req *req, size_t *len);

/*
 * Tracks where a request body ends (Content-Length or chunked), so that
 * bytes after it (a second, pipelined request, perhaps for another virtual
 * host) are never passed upstream.
 */
struct lg_http_body {
	int state;
	uint64_t left;
	unsigned count;
};
void lg_http_body_init(struct lg_http_body *b, const struct lg_http_req *req);
/* How many of the n bytes at p belong to the body (the rest are after it); -EINVAL if malformed. */
ssize_t lg_http_body_feed(struct lg_http_body *b, const uint8_t *p, size_t n);
bool lg_http_body_done(const struct lg_http_body *b);

/* A ClientHello larger than this (in all its records) is refused. */
#define LG_TLS_MAX_HELLO 32768

/*
 * The SNI host name of a TLS ClientHello at the start of buf (possibly in
 * several handshake records).  Returns 1 and fills name (lower case, no
 * trailing dot), 0 when more bytes are needed, -ENOENT when the hello
 * carries no SNI, -EINVAL when buf does not start with a TLS handshake
 * record (not TLS at all), -EPROTO when it does but is malformed, not a
 * ClientHello, or over LG_TLS_MAX_HELLO, or the name does not fit.
 */
int lg_tls_sni(const uint8_t *buf, size_t len, char *name, size_t name_len);

/* ---- the proxy ---------------------------------------------------------- */

enum lg_egress_verdict { LG_EGRESS_ALLOWED, LG_EGRESS_DENIED, LG_EGRESS_FAILED };

/* One line of the connection log. */
struct lg_egress_event {
	const char *host;
	uint16_t port;
	const char *method;  /* "CONNECT", "GET", ... */
	const char *address; /* resolved address dialled, or NULL */
	enum lg_egress_verdict verdict;
	const char *reason; /* why denied or failed, or NULL */
	uint64_t bytes_up, bytes_down;
};

struct lg_egress {
	/*
	 * Owned by the caller.  While connections are served, the proxy adds
	 * approved entries to it: read or change it only under lock.
	 */
	struct lg_allowlist *allow;
	/*
	 * A destination not on the allowlist: the approval cliff.  Returns true
	 * if a human allowed it; the proxy then adds HOST:PORT to the allowlist
	 * (for this sandbox) as an approved entry.  NULL: refused.  Called on
	 * the connection's thread; may block until the human decides.  Never
	 * called for an address an approval could not open (loopback, private,
	 * link-local, metadata, this host's own): those are refused at once.
	 */
	bool (*ask)(void *ctx, const char *host, uint16_t port);
	void *ask_ctx;
	/* Each connection ends with one call (logging, audit).  May be NULL. */
	void (*log)(void *ctx, const struct lg_egress_event *ev);
	void *log_ctx;
	int connect_timeout_ms; /* 0 = 10 s */
	int idle_timeout_ms;	/* relay ends after this long without bytes; 0 = 300 s */
	int head_timeout_ms;	/* the request head must arrive within; 0 = 30 s */
	pthread_mutex_t lock;	/* serializes allowlist access; lg_egress_init sets it up */
};

/* Zeroes *eg, sets allow and the lock; set ask, log and timeouts after. */
void lg_egress_init(struct lg_egress *eg, struct lg_allowlist *allow);
void lg_egress_fini(struct lg_egress *eg);

/*
 * Serves one proxied connection on client_fd (a stream socket whose other
 * end is the guest program) until either side closes: reads the request
 * head, decides, answers 403/502 with a one-line reason or
 * "200 Connection established" / forwards the request, then relays.
 * Always closes client_fd.  Thread-safe: one thread per connection.
 */
void lg_egress_serve(struct lg_egress *eg, int client_fd);

#endif
