/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The egress proxy's parsers: the HTTP proxy request head, request body
 * framing, and the SNI of a TLS ClientHello.  Every byte here comes from
 * the guest, i.e. from whatever runs in the sandbox, so the parsers are
 * strict (one spelling of each thing, anything doubtful refused), bounded,
 * and fuzzed (fuzz/fuzz_http.c).  Strictness matters most where two HTTP
 * parsers could disagree about where a line, a header or a body ends: that
 * disagreement is how requests are smuggled past a proxy's checks.
 */
#include "net/egress.h"

#include "common/encoding.h"
#include "common/util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* RFC 9110 token characters (method and header names). */
static bool is_tchar(unsigned char c)
{
	if (isalnum(c))
		return true;
	return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool is_name_char(unsigned char c)
{
	/* '_' is not valid in host names but is common in real DNS labels. */
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_' || c == '.';
}

int lg_dns_name_canon(const char *s, size_t n, char *out, size_t out_len)
{
	size_t label = 0;

	if (n > 0 && s[n - 1] == '.')
		n--;
	if (n == 0 || n > 253 || n >= out_len)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = s[i];

		if (!is_name_char(c))
			return -EINVAL;
		if (c == '.') {
			if (label == 0)
				return -EINVAL;
			label = 0;
		} else if (++label > 63) {
			return -EINVAL;
		}
		out[i] = tolower(c);
	}
	if (label == 0)
		return -EINVAL;
	out[n] = '\0';
	return 0;
}

static int parse_port(const char *s, size_t n, uint16_t *port)
{
	unsigned v = 0;

	if (n == 0 || n > 5)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		v = v * 10 + (s[i] - '0');
	}
	if (v == 0 || v > 65535)
		return -EINVAL;
	*port = v;
	return 0;
}

/*
 * host[:port] or [v6][:port].  No userinfo: "http://allowed@evil/" reads as
 * one host to some parsers and another to others.  No IPv6 zone ids.
 */
static int parse_authority(const char *s, size_t n, char host[256], uint16_t *port, bool *has_port)
{
	const char *colon;

	*has_port = false;
	if (n == 0 || memchr(s, '@', n) != NULL)
		return -EINVAL;
	if (s[0] == '[') {
		const char *close = memchr(s, ']', n);
		char tmp[INET6_ADDRSTRLEN];
		struct in6_addr a;
		size_t alen;

		if (close == NULL)
			return -EINVAL;
		alen = close - s - 1;
		if (alen == 0 || alen >= sizeof(tmp))
			return -EINVAL;
		memcpy(tmp, s + 1, alen);
		tmp[alen] = '\0';
		if (inet_pton(AF_INET6, tmp, &a) != 1)
			return -EINVAL;
		for (size_t i = 0; i <= alen; i++)
			host[i] = tolower((unsigned char)tmp[i]);
		s = close + 1;
		n -= alen + 2;
		if (n == 0)
			return 0;
		if (s[0] != ':')
			return -EINVAL;
		*has_port = true;
		return parse_port(s + 1, n - 1, port);
	}
	colon = memchr(s, ':', n);
	if (colon != NULL) {
		size_t hlen = colon - s;

		/* A second colon: an unbracketed IPv6 address, ambiguous. */
		if (memchr(colon + 1, ':', n - hlen - 1) != NULL)
			return -EINVAL;
		*has_port = true;
		if (parse_port(colon + 1, n - hlen - 1, port) < 0)
			return -EINVAL;
		n = hlen;
	}
	return lg_dns_name_canon(s, n, host, 256);
}

static bool prefix_ci(const char *s, size_t n, const char *prefix)
{
	size_t pn = strlen(prefix);

	return n >= pn && strncasecmp(s, prefix, pn) == 0;
}

static int fail(struct lg_http_req *out, int code, const char *why)
{
	out->error = why;
	return code;
}

static int parse_target(const char *t, size_t n, struct lg_http_req *out)
{
	bool has_port;
	size_t alen, plen;
	const char *path;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = t[i];

		if (c <= 0x20 || c >= 0x7f)
			return fail(out, -EINVAL,
				    "control or non-ASCII byte in the request target");
	}
	if (out->kind == LG_HTTP_CONNECT) {
		if (parse_authority(t, n, out->host, &out->port, &has_port) < 0 || !has_port)
			return fail(out, -EINVAL, "CONNECT needs HOST:PORT (port 1-65535)");
		return 0;
	}
	if (prefix_ci(t, n, "https://"))
		return fail(out, -ENOTSUP,
			    "https:// URLs go through CONNECT (set HTTPS_PROXY), not as a "
			    "plain proxy request");
	if (!prefix_ci(t, n, "http://"))
		return fail(out, -ENOTSUP,
			    "not a proxy request: expected CONNECT host:port or an absolute "
			    "http:// URL");
	t += 7;
	n -= 7;
	for (alen = 0; alen < n; alen++)
		if (t[alen] == '/' || t[alen] == '?' || t[alen] == '#')
			break;
	out->port = 80;
	if (parse_authority(t, alen, out->host, &out->port, &has_port) < 0)
		return fail(out, -EINVAL, "bad host or port in the request URL");
	path = t + alen;
	plen = n - alen;
	/* The fragment is the client's business, never sent to a server. */
	for (size_t i = 0; i < plen; i++)
		if (path[i] == '#') {
			plen = i;
			break;
		}
	if (plen == 0 || path[0] == '?') {
		if (plen + 2 > sizeof(out->path))
			return fail(out, -EINVAL, "request URL too long");
		out->path[0] = '/';
		memcpy(out->path + 1, path, plen);
		out->path[plen + 1] = '\0';
	} else {
		if (plen + 1 > sizeof(out->path))
			return fail(out, -EINVAL, "request URL too long");
		memcpy(out->path, path, plen);
		out->path[plen] = '\0';
	}
	return 0;
}

static int parse_request_line(const char *l, size_t n, struct lg_http_req *out)
{
	const char *sp1 = memchr(l, ' ', n), *sp2;
	size_t mlen;

	if (sp1 == NULL)
		return fail(out, -EINVAL, "bad request line");
	mlen = sp1 - l;
	if (mlen == 0 || mlen >= sizeof(out->method))
		return fail(out, -EINVAL, "bad method");
	for (size_t i = 0; i < mlen; i++)
		if (!is_tchar(l[i]))
			return fail(out, -EINVAL, "bad method");
	memcpy(out->method, l, mlen);
	out->method[mlen] = '\0';
	sp2 = memchr(sp1 + 1, ' ', n - mlen - 1);
	if (sp2 == NULL || sp2 == sp1 + 1)
		return fail(out, -EINVAL, "bad request line");
	if ((size_t)(l + n - (sp2 + 1)) != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0 ||
	    (sp2[8] != '0' && sp2[8] != '1'))
		return fail(out, -EINVAL, "bad HTTP version (HTTP/1.0 or HTTP/1.1)");
	out->http_minor = sp2[8] - '0';
	out->kind = strcmp(out->method, "CONNECT") == 0 ? LG_HTTP_CONNECT : LG_HTTP_FORWARD;
	return parse_target(sp1 + 1, sp2 - sp1 - 1, out);
}

static bool name_is(const char *name, size_t n, const char *want)
{
	return strlen(want) == n && strncasecmp(name, want, n) == 0;
}

static int parse_header(const char *l, size_t n, struct lg_http_req *out, int *nhost, int *ncl,
			int *nte)
{
	const char *colon = memchr(l, ':', n);
	const char *v;
	size_t nlen, vlen;

	if (l[0] == ' ' || l[0] == '\t')
		return fail(out, -EINVAL, "obsolete header line folding");
	if (colon == NULL || colon == l)
		return fail(out, -EINVAL, "bad header line");
	nlen = colon - l;
	for (size_t i = 0; i < nlen; i++)
		if (!is_tchar(l[i]))
			return fail(out, -EINVAL, "bad header name");
	v = colon + 1;
	vlen = n - nlen - 1;
	while (vlen > 0 && (v[0] == ' ' || v[0] == '\t'))
		v++, vlen--;
	while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
		vlen--;
	for (size_t i = 0; i < vlen; i++) {
		unsigned char c = v[i];

		if (c != '\t' && (c < 0x20 || c == 0x7f))
			return fail(out, -EINVAL, "control byte in a header value");
	}
	if (name_is(l, nlen, "Host")) {
		char h[256];
		uint16_t port = 80;
		bool has_port;

		if (++*nhost > 1)
			return fail(out, -EINVAL, "more than one Host header");
		if (out->kind == LG_HTTP_CONNECT)
			return 0;
		/*
		 * The check is on the URL's host; a server would route on the
		 * Host header.  They must be the same.
		 */
		if (parse_authority(v, vlen, h, &port, &has_port) < 0)
			return fail(out, -EINVAL, "bad Host header");
		if (strcmp(h, out->host) != 0 || port != out->port)
			return fail(out, -EINVAL, "Host header does not match the request URL");
		out->has_host = true;
	} else if (name_is(l, nlen, "Content-Length")) {
		uint64_t cl = 0;

		if (++*ncl > 1)
			return fail(out, -EINVAL, "more than one Content-Length header");
		if (vlen == 0 || vlen > 15)
			return fail(out, -EINVAL, "bad Content-Length");
		for (size_t i = 0; i < vlen; i++) {
			if (v[i] < '0' || v[i] > '9')
				return fail(out, -EINVAL, "bad Content-Length");
			cl = cl * 10 + (v[i] - '0');
		}
		out->content_length = cl;
	} else if (name_is(l, nlen, "Transfer-Encoding")) {
		if (++*nte > 1)
			return fail(out, -EINVAL, "more than one Transfer-Encoding header");
		if (!name_is(v, vlen, "chunked"))
			return fail(out, -ENOTSUP, "Transfer-Encoding other than chunked");
		out->chunked = true;
	}
	return 0;
}

int lg_http_parse_request(const char *buf, size_t len, struct lg_http_req *out)
{
	size_t lim = len < LG_HTTP_MAX_HEAD ? len : LG_HTTP_MAX_HEAD;
	size_t end = 0, pos, nheaders = 0;
	int nhost = 0, ncl = 0, nte = 0, r;

	memset(out, 0, sizeof(*out));
	out->content_length = -1;
	for (size_t i = 0; i < lim; i++) {
		unsigned char c = buf[i];

		if (c == '\0')
			return fail(out, -EINVAL, "NUL byte in the request head");
		if (c == '\r' && i + 1 < len && buf[i + 1] != '\n')
			return fail(out, -EINVAL, "bare CR in the request head");
		if (c == '\n') {
			if (i == 0 || buf[i - 1] != '\r')
				return fail(out, -EINVAL, "bare LF in the request head");
			if (i >= 3 && buf[i - 2] == '\n') {
				end = i + 1;
				break;
			}
		}
	}
	if (end == 0) {
		if (len >= LG_HTTP_MAX_HEAD)
			return fail(out, -EMSGSIZE, "request head too large");
		return 0;
	}

	/* Every line now ends in CRLF, and no CR or LF is anywhere else. */
	pos = 0;
	for (bool first = true;; first = false) {
		const char *l = buf + pos;
		size_t n = (const char *)memchr(l, '\r', end - pos) - l;

		pos += n + 2;
		if (n == 0) {
			if (first)
				return fail(out, -EINVAL, "empty request line");
			break;
		}
		if (n > LG_HTTP_MAX_LINE)
			return fail(out, -EMSGSIZE, "request line or header too long");
		if (first) {
			r = parse_request_line(l, n, out);
		} else {
			if (++nheaders > LG_HTTP_MAX_HEADERS)
				return fail(out, -EMSGSIZE, "too many headers");
			r = parse_header(l, n, out, &nhost, &ncl, &nte);
		}
		if (r < 0)
			return r;
	}
	if (out->kind == LG_HTTP_CONNECT) {
		out->content_length = -1;
		out->chunked = false;
	} else if (out->chunked && out->content_length >= 0) {
		/* Which one a server believes decides where the next request starts. */
		return fail(out, -EINVAL, "both Content-Length and Transfer-Encoding");
	}
	out->head_len = end;
	return (int)end;
}

/* ---- the head sent upstream ------------------------------------------- */

static bool in_list(const char *list, size_t llen, const char *name, size_t nlen)
{
	size_t i = 0;

	while (i < llen) {
		size_t s, e;

		while (i < llen && (list[i] == ' ' || list[i] == '\t' || list[i] == ','))
			i++;
		s = i;
		while (i < llen && list[i] != ',')
			i++;
		e = i;
		while (e > s && (list[e - 1] == ' ' || list[e - 1] == '\t'))
			e--;
		if (e > s && e - s == nlen && strncasecmp(list + s, name, nlen) == 0)
			return true;
	}
	return false;
}

static bool hop_by_hop(const char *name, size_t n)
{
	static const char *const hop[] = {
	    "Connection",
	    "Proxy-Connection",
	    "Keep-Alive",
	    "Proxy-Authorization",
	    "Proxy-Authenticate",
	    "TE",
	    "Trailer",
	    "Upgrade",
	};

	for (size_t i = 0; i < ARRAY_SIZE(hop); i++)
		if (name_is(name, n, hop[i]))
			return true;
	return false;
}

char *lg_http_forward_head(const char *buf, const struct lg_http_req *req, size_t *len)
{
	size_t cap = req->head_len + strlen(req->path) + 512, n = 0, pos;
	char *out = xmalloc(cap);
	/* The Connection headers' values, joined: the headers they name go too. */
	char conn[LG_HTTP_MAX_HEAD];
	size_t conn_len = 0;

	pos = (const char *)memchr(buf, '\r', req->head_len) - buf + 2;
	for (size_t p = pos; p < req->head_len;) {
		const char *l = buf + p;
		size_t ln = (const char *)memchr(l, '\r', req->head_len - p) - l;
		const char *colon = memchr(l, ':', ln);

		p += ln + 2;
		if (ln == 0 || colon == NULL || !name_is(l, colon - l, "Connection"))
			continue;
		if (conn_len + (ln - (colon + 1 - l)) + 1 < sizeof(conn)) {
			memcpy(conn + conn_len, colon + 1, ln - (colon + 1 - l));
			conn_len += ln - (colon + 1 - l);
			conn[conn_len++] = ',';
		}
	}

	n += snprintf(out + n, cap - n, "%s %s HTTP/1.%d\r\n", req->method, req->path,
		      req->http_minor);
	for (size_t p = pos; p < req->head_len;) {
		const char *l = buf + p;
		size_t ln = (const char *)memchr(l, '\r', req->head_len - p) - l;
		const char *colon = memchr(l, ':', ln);
		size_t nlen;

		p += ln + 2;
		if (ln == 0)
			break;
		nlen = colon - l;
		if (hop_by_hop(l, nlen))
			continue;
		/*
		 * A header the Connection header names is hop-by-hop too, except
		 * the ones that say where the request and its body are: dropping
		 * those while relaying the body would let it be read as a second
		 * request.
		 */
		if (in_list(conn, conn_len, l, nlen) && !name_is(l, nlen, "Host") &&
		    !name_is(l, nlen, "Content-Length") && !name_is(l, nlen, "Transfer-Encoding"))
			continue;
		memcpy(out + n, l, ln + 2);
		n += ln + 2;
	}
	if (!req->has_host) {
		bool v6 = strchr(req->host, ':') != NULL;

		n += snprintf(out + n, cap - n, "Host: %s%s%s", v6 ? "[" : "", req->host,
			      v6 ? "]" : "");
		if (req->port != 80)
			n += snprintf(out + n, cap - n, ":%u", req->port);
		n += snprintf(out + n, cap - n, "\r\n");
	}
	n += snprintf(out + n, cap - n, "Connection: close\r\n\r\n");
	*len = n;
	return out;
}

/* ---- request body framing ---------------------------------------------- */

enum {
	B_LEN,	       /* Content-Length: left bytes to go */
	B_SIZE,	       /* chunk size hex digits */
	B_EXT,	       /* chunk extension, up to CR */
	B_SIZE_LF,     /* LF after the size line */
	B_DATA,	       /* chunk data: left bytes to go */
	B_DATA_CR,     /* CRLF after the data */
	B_DATA_LF,     /* */
	B_TRAIL_START, /* start of a trailer line, or the final CRLF */
	B_TRAIL,       /* in a trailer line */
	B_TRAIL_LF,    /* */
	B_FINAL_LF,    /* */
	B_DONE,
};

#define MAX_CHUNK_LINE 4096

void lg_http_body_init(struct lg_http_body *b, const struct lg_http_req *req)
{
	memset(b, 0, sizeof(*b));
	if (req->kind == LG_HTTP_FORWARD && req->chunked) {
		b->state = B_SIZE;
	} else if (req->kind == LG_HTTP_FORWARD && req->content_length > 0) {
		b->state = B_LEN;
		b->left = req->content_length;
	} else {
		b->state = B_DONE;
	}
}

bool lg_http_body_done(const struct lg_http_body *b)
{
	return b->state == B_DONE;
}

ssize_t lg_http_body_feed(struct lg_http_body *b, const uint8_t *p, size_t n)
{
	size_t i = 0;

	while (i < n && b->state != B_DONE) {
		uint8_t c = p[i];

		switch (b->state) {
		case B_LEN:
		case B_DATA: {
			size_t take = n - i < b->left ? n - i : (size_t)b->left;

			i += take;
			b->left -= take;
			if (b->left == 0)
				b->state = b->state == B_LEN ? B_DONE : B_DATA_CR;
			continue;
		}
		case B_SIZE:
			if (lg_hex_digit(c) >= 0) {
				/* 15 hex digits: under 2^60, no overflow. */
				if (++b->count > 15)
					return -EINVAL;
				b->left = b->left * 16 + lg_hex_digit(c);
			} else if (b->count == 0) {
				return -EINVAL;
			} else if (c == '\r') {
				b->state = B_SIZE_LF;
			} else if (c == ';' || c == ' ' || c == '\t') {
				b->state = B_EXT;
				b->count = 0;
			} else {
				return -EINVAL;
			}
			break;
		case B_EXT:
			if (c == '\r')
				b->state = B_SIZE_LF;
			else if (c == '\n' || c == '\0' || ++b->count > MAX_CHUNK_LINE)
				return -EINVAL;
			break;
		case B_SIZE_LF:
			if (c != '\n')
				return -EINVAL;
			b->count = 0;
			b->state = b->left == 0 ? B_TRAIL_START : B_DATA;
			break;
		case B_DATA_CR:
			if (c != '\r')
				return -EINVAL;
			b->state = B_DATA_LF;
			break;
		case B_DATA_LF:
			if (c != '\n')
				return -EINVAL;
			b->state = B_SIZE;
			b->count = 0;
			b->left = 0;
			break;
		case B_TRAIL_START:
			if (c == '\r') {
				b->state = B_FINAL_LF;
				break;
			}
			b->state = B_TRAIL;
			b->count = 0;
			/* fall through */
		case B_TRAIL:
			if (c == '\r')
				b->state = B_TRAIL_LF;
			else if (c == '\n' || c == '\0' || ++b->count > MAX_CHUNK_LINE)
				return -EINVAL;
			break;
		case B_TRAIL_LF:
			if (c != '\n')
				return -EINVAL;
			b->state = B_TRAIL_START;
			break;
		case B_FINAL_LF:
			if (c != '\n')
				return -EINVAL;
			b->state = B_DONE;
			break;
		}
		i++;
	}
	return (ssize_t)i;
}

/* ---- TLS ClientHello SNI ------------------------------------------------ */

struct rd {
	const uint8_t *p;
	size_t n;
};

static bool take(struct rd *r, size_t k, const uint8_t **out)
{
	if (r->n < k)
		return false;
	if (out != NULL)
		*out = r->p;
	r->p += k;
	r->n -= k;
	return true;
}

static bool u8(struct rd *r, unsigned *v)
{
	const uint8_t *p;

	if (!take(r, 1, &p))
		return false;
	*v = p[0];
	return true;
}

static bool u16(struct rd *r, unsigned *v)
{
	const uint8_t *p;

	if (!take(r, 2, &p))
		return false;
	*v = (unsigned)p[0] << 8 | p[1];
	return true;
}

/* The ClientHello body (after the 4-byte handshake header). */
static int hello_sni(struct rd r, char *name, size_t name_len)
{
	unsigned v, ext_total;
	bool found = false;

	if (!take(&r, 2 + 32, NULL))
		return -EPROTO;
	if (!u8(&r, &v) || v > 32 || !take(&r, v, NULL)) /* session id */
		return -EPROTO;
	if (!u16(&r, &v) || v < 2 || v % 2 != 0 || !take(&r, v, NULL)) /* cipher suites */
		return -EPROTO;
	if (!u8(&r, &v) || v < 1 || !take(&r, v, NULL)) /* compression methods */
		return -EPROTO;
	if (r.n == 0)
		return -ENOENT; /* no extensions at all */
	if (!u16(&r, &ext_total) || ext_total != r.n)
		return -EPROTO;
	while (r.n > 0) {
		unsigned type, elen, list_len;
		struct rd e;

		if (!u16(&r, &type) || !u16(&r, &elen) || !take(&r, elen, &e.p))
			return -EPROTO;
		e.n = elen;
		if (type != 0)
			continue;
		/* Two server_name extensions: which one would the server use? */
		if (found)
			return -EPROTO;
		if (!u16(&e, &list_len) || list_len != e.n || list_len == 0)
			return -EPROTO;
		while (e.n > 0) {
			unsigned ntype, nlen;
			const uint8_t *nm;

			if (!u8(&e, &ntype) || !u16(&e, &nlen) || !take(&e, nlen, &nm))
				return -EPROTO;
			if (ntype != 0)
				continue;
			/* RFC 6066: at most one host_name. */
			if (found)
				return -EPROTO;
			if (lg_dns_name_canon((const char *)nm, nlen, name, name_len) < 0)
				return -EPROTO;
			found = true;
		}
		if (!found)
			return -EPROTO;
	}
	return found ? 1 : -ENOENT;
}

int lg_tls_sni(const uint8_t *buf, size_t len, char *name, size_t name_len)
{
	uint8_t *hs = NULL;
	size_t have = 0, need = 0, off = 0;
	int ret;

	if (len == 0)
		return 0;
	if (buf[0] != 0x16)
		return -EINVAL;
	/* The handshake message may span records: gather it. */
	for (;;) {
		size_t rlen;

		if (len - off < 5) {
			/* Check what is there of the next record header. */
			if (len - off >= 1 && buf[off] != 0x16)
				goto proto;
			if (len - off >= 2 && buf[off + 1] != 0x03)
				goto proto;
			ret = 0;
			goto out;
		}
		if (buf[off] != 0x16 || buf[off + 1] != 0x03)
			goto proto;
		rlen = (size_t)buf[off + 3] << 8 | buf[off + 4];
		/* Empty handshake fragments are forbidden (RFC 8446 5.1). */
		if (rlen == 0 || rlen > 16384 || have + rlen > LG_TLS_MAX_HELLO + 16384)
			goto proto;
		if (len - off - 5 < rlen) {
			ret = 0;
			goto out;
		}
		hs = xrealloc(hs, have + rlen);
		memcpy(hs + have, buf + off + 5, rlen);
		have += rlen;
		off += 5 + rlen;
		if (have < 4)
			continue;
		if (hs[0] != 1) /* client_hello */
			goto proto;
		need = 4 + ((size_t)hs[1] << 16 | (size_t)hs[2] << 8 | hs[3]);
		if (need > LG_TLS_MAX_HELLO)
			goto proto;
		if (have >= need)
			break;
	}
	ret = hello_sni((struct rd){hs + 4, need - 4}, name, name_len);
	goto out;
proto:
	ret = -EPROTO;
out:
	free(hs);
	return ret;
}
