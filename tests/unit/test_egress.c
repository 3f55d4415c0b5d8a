/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the egress proxy: the allowlist, the forbidden ranges, the
 * request-head, body and SNI parsers, and whole proxied connections over
 * real sockets (lg_egress_serve on one end of a socketpair, a TCP server on
 * 127.0.0.1 as the destination).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "common/util.h"
#include "net/egress.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- allowlist ---------------------------------------------------------- */

static struct lg_allowlist *parse_ok(const char *spec)
{
	struct lg_allowlist *al = NULL;
	struct lg_err *err = NULL;

	if (lg_allowlist_parse(spec, &al, &err) < 0) {
		fprintf(stderr, "parse '%s': %s\n", spec, err->msg);
		fail();
	}
	return al;
}

static void parse_bad(const char *spec, const char *needle)
{
	struct lg_allowlist *al = NULL;
	struct lg_err *err = NULL;

	assert_true(lg_allowlist_parse(spec, &al, &err) < 0);
	assert_null(al);
	assert_non_null(err);
	if (strstr(err->msg, needle) == NULL) {
		fprintf(stderr, "'%s': message '%s' lacks '%s'\n", spec, err->msg, needle);
		fail();
	}
	lg_err_free(&err);
}

static void test_allowlist_bad_entries(void **state)
{
	parse_bad("", "empty allowlist entry");
	parse_bad("pypi.org,,x.org", "empty allowlist entry");
	parse_bad("pypi.org, ", "empty allowlist entry");
	parse_bad("*.", "'*.DOMAIN'");
	parse_bad("*", "not a host name");
	parse_bad("*.com", "two labels");
	parse_bad("a.*.b", "not a host name");
	parse_bad("a..b", "not a host name");
	parse_bad(".a.b", "not a host name");
	parse_bad("a.b:0", "port must be 1-65535");
	parse_bad("a.b:70000", "port must be 1-65535");
	parse_bad("a.b:", "port must be 1-65535");
	parse_bad("a.b:-1", "port must be 1-65535");
	parse_bad("http://x", "is a URL");
	parse_bad("https://pypi.org/simple", "is a URL");
	parse_bad("exa mple.com", "not a host name");
	parse_bad("10.0.0.0/33", "bad address or CIDR");
	parse_bad("10.0.0.0/x", "bad address or CIDR");
	parse_bad("[fd00::1", "missing ']'");
	parse_bad("[10.0.0.1]", "not an IPv6");
	parse_bad("[::1]x", "expected ':PORT'");
	parse_bad("fd00::/129", "not an IPv6");
	parse_bad("user@host.com", "not a host name");
}

static void test_allowlist_names(void **state)
{
	struct lg_allowlist *al =
	    parse_ok(" PyPI.org , *.PythonHosted.org., api.x.io:8443, any.io:*");
	char *s = lg_allowlist_str(al);

	assert_string_equal(s, "PyPI.org, *.PythonHosted.org., api.x.io:8443, any.io:*");
	free(s);
	/* Case-insensitive, trailing dot ignored, no port means 80 and 443. */
	assert_true(lg_allowlist_match_host(al, "pypi.org", 443));
	assert_true(lg_allowlist_match_host(al, "PYPI.ORG.", 80));
	assert_false(lg_allowlist_match_host(al, "pypi.org", 8080));
	assert_false(lg_allowlist_match_host(al, "www.pypi.org", 443));
	assert_false(lg_allowlist_match_host(al, "pypi.org.evil.com", 443));
	assert_false(lg_allowlist_match_host(al, "evilpypi.org", 443));
	/* A wildcard matches below its domain, any depth, not the domain. */
	assert_true(lg_allowlist_match_host(al, "files.pythonhosted.org", 443));
	assert_true(lg_allowlist_match_host(al, "a.b.PythonHosted.org", 443));
	assert_false(lg_allowlist_match_host(al, "pythonhosted.org", 443));
	assert_false(lg_allowlist_match_host(al, "xpythonhosted.org", 443));
	/* Ports. */
	assert_true(lg_allowlist_match_host(al, "api.x.io", 8443));
	assert_false(lg_allowlist_match_host(al, "api.x.io", 443));
	assert_true(lg_allowlist_match_host(al, "any.io", 1));
	assert_true(lg_allowlist_match_host(al, "any.io", 65535));
	/* An address literal does not match a name entry. */
	assert_false(lg_allowlist_match_host(al, "10.0.0.1", 443));
	assert_false(lg_allowlist_match_host(al, "", 443));
	lg_allowlist_free(al);
}

static struct sockaddr_storage sa_of(const char *addr, uint16_t port)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	if (strchr(addr, ':') != NULL) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		assert_int_equal(inet_pton(AF_INET6, addr, &s6->sin6_addr), 1);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		assert_int_equal(inet_pton(AF_INET, addr, &s4->sin_addr), 1);
	}
	return ss;
}

static bool match_addr(const struct lg_allowlist *al, const char *addr, uint16_t port)
{
	struct sockaddr_storage ss = sa_of(addr, port);

	return lg_allowlist_match_addr(al, (struct sockaddr *)&ss);
}

static void test_allowlist_addresses(void **state)
{
	struct lg_allowlist *al =
	    parse_ok("10.0.0.5, 192.168.1.0/24:8080, [fd00::1]:22, fd00:1::/32, [fe80::/64]:*,"
		     "0.0.0.0/0:9");
	struct lg_err *err = NULL;

	assert_true(lg_allowlist_match_host(al, "10.0.0.5", 443));
	assert_false(lg_allowlist_match_host(al, "10.0.0.5", 22));
	assert_true(lg_allowlist_match_host(al, "192.168.1.77", 8080));
	assert_false(lg_allowlist_match_host(al, "192.168.2.1", 8080));
	assert_true(lg_allowlist_match_host(al, "fd00::1", 22));
	assert_true(lg_allowlist_match_host(al, "FD00:0:0::1", 22));
	assert_false(lg_allowlist_match_host(al, "fd00::2", 22));
	assert_true(lg_allowlist_match_host(al, "fd00:1:ffff::9", 80));
	assert_false(lg_allowlist_match_host(al, "fd00:2::9", 80));
	assert_true(lg_allowlist_match_host(al, "fe80::1234", 5));
	assert_true(lg_allowlist_match_host(al, "8.8.8.8", 9));
	assert_false(lg_allowlist_match_host(al, "8.8.8.8", 10));

	assert_true(match_addr(al, "10.0.0.5", 80));
	assert_false(match_addr(al, "10.0.0.5", 81));
	assert_false(match_addr(al, "10.0.0.6", 80));
	assert_true(match_addr(al, "192.168.1.1", 8080));
	assert_true(match_addr(al, "fd00::1", 22));
	assert_false(match_addr(al, "fd00::1", 23));
	/* An IPv4 entry does not match the IPv6 family and vice versa. */
	assert_false(match_addr(al, "::ffff:10.0.0.5", 80));

	/* Added at run time, after an approval. */
	assert_false(lg_allowlist_match_host(al, "new.example", 8000));
	assert_int_equal(lg_allowlist_add_approved(al, "new.example:8000", &err), 0);
	assert_true(lg_allowlist_match_host(al, "new.example", 8000));
	assert_true(lg_allowlist_add_approved(al, "bad..name", &err) < 0);
	lg_err_free(&err);
	/*
	 * An approved address entry saves asking again, but never opens the
	 * address at dial time: only host-written entries do.
	 */
	assert_int_equal(lg_allowlist_add_approved(al, "127.0.0.1:8000", &err), 0);
	assert_int_equal(lg_allowlist_add_approved(al, "[::1]:8000", &err), 0);
	assert_true(lg_allowlist_match_host(al, "127.0.0.1", 8000));
	assert_true(lg_allowlist_match_host(al, "::1", 8000));
	assert_false(match_addr(al, "127.0.0.1", 8000));
	assert_false(match_addr(al, "::1", 8000));
	assert_int_equal(lg_allowlist_add(al, "127.0.0.1:8000", &err), 0);
	assert_true(match_addr(al, "127.0.0.1", 8000));
	{
		char *str = lg_allowlist_str(al);

		assert_non_null(strstr(str,
				       ", new.example:8000 (approved), 127.0.0.1:8000 (approved), "
				       "[::1]:8000 (approved), 127.0.0.1:8000"));
		free(str);
	}
	lg_allowlist_free(al);
}

static bool forbidden(const char *addr)
{
	struct sockaddr_storage ss = sa_of(addr, 443);
	const char *why = NULL;
	bool r = lg_addr_forbidden((struct sockaddr *)&ss, &why);

	assert_true(r == (why != NULL) || !r);
	return r;
}

/* Names and wildcards only, or any address or CIDR among them (the API takes names only). */
static void test_allowlist_has_addresses(void **state)
{
	static const char *const names[] = {"pypi.org", "*.github.com:443, example.org:*",
					    "localhost", "1.example"};
	static const char *const addrs[] = {"pypi.org,10.0.0.5", "127.0.0.1:80", "[::1]:80",
					    "fd00:1::/32", "pypi.org, 0.0.0.0/0:9"};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		struct lg_allowlist *al = parse_ok(names[i]);
		assert_false(lg_allowlist_has_addresses(al));
		lg_allowlist_free(al);
	}
	for (size_t i = 0; i < ARRAY_SIZE(addrs); i++) {
		struct lg_allowlist *al = parse_ok(addrs[i]);
		assert_true(lg_allowlist_has_addresses(al));
		lg_allowlist_free(al);
	}
}

static void test_addr_forbidden(void **state)
{
	static const char *const bad[] = {
	    "0.0.0.0",
	    "0.1.2.3",
	    "10.0.0.1",
	    "10.255.255.255",
	    "100.64.0.1",
	    "100.127.255.254",
	    "127.0.0.1",
	    "127.8.9.10",
	    "169.254.169.254",
	    "169.254.1.1",
	    "172.16.0.1",
	    "172.31.255.255",
	    "192.0.0.8",
	    "192.0.2.1",
	    "192.168.0.1",
	    "198.18.0.1",
	    "198.19.255.1",
	    "198.51.100.7",
	    "203.0.113.9",
	    "224.0.0.1",
	    "239.255.255.250",
	    "240.0.0.1",
	    "255.255.255.255",
	    "::",
	    "::1",
	    "fc00::1",
	    "fd12:3456::1",
	    "fe80::1",
	    "febf::1",
	    "fec0::1",
	    "ff02::1",
	    "2001:db8::1",
	    "2001::1",
	    "::ffff:127.0.0.1",
	    "::ffff:10.1.2.3",
	    "::ffff:169.254.169.254",
	    "::127.0.0.1",
	    "::10.0.0.1",
	    "::ffff:0:127.0.0.1",
	    "64:ff9b::127.0.0.1",
	    "64:ff9b::a9fe:a9fe",
	    "64:ff9b:1::1",
	    "2002:7f00:1::1",
	    "2002:c0a8:0101::5",
	    "100::1",
	    "4000::1",
	};
	static const char *const good[] = {
	    "1.1.1.1",	      "8.8.8.8",	  "93.184.216.34",     "172.32.0.1",
	    "172.15.255.255", "100.128.0.1",	  "100.63.255.255",    "169.253.1.1",
	    "192.169.0.1",    "223.255.255.255",  "2606:4700::1111",   "2a00:1450:4001::200e",
	    "::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "2002:0808:0808::1",
	};
	struct sockaddr_un_like {
		sa_family_t f;
	} unix_sa = {AF_UNIX};
	const char *why = NULL;

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		if (!forbidden(bad[i])) {
			fprintf(stderr, "%s should be forbidden\n", bad[i]);
			fail();
		}
	}
	for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
		if (forbidden(good[i])) {
			fprintf(stderr, "%s should pass\n", good[i]);
			fail();
		}
	}
	{
		struct sockaddr_storage ss = sa_of("169.254.169.254", 80);

		assert_true(lg_addr_forbidden((struct sockaddr *)&ss, &why));
		assert_non_null(strstr(why, "metadata"));
		ss = sa_of("::ffff:192.168.1.1", 80);
		assert_true(lg_addr_forbidden((struct sockaddr *)&ss, &why));
		assert_non_null(strstr(why, "RFC 1918"));
	}
	assert_true(lg_addr_forbidden((struct sockaddr *)&unix_sa, &why));
}

/* ---- request head ------------------------------------------------------- */

static int parse(const char *s, struct lg_http_req *r)
{
	return lg_http_parse_request(s, strlen(s), r);
}

static void test_parse_connect(void **state)
{
	struct lg_http_req r;
	const char *s = "CONNECT Example.COM.:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\nextra";

	assert_int_equal(parse(s, &r), strlen(s) - 5);
	assert_int_equal(r.kind, LG_HTTP_CONNECT);
	assert_string_equal(r.method, "CONNECT");
	assert_string_equal(r.host, "example.com");
	assert_int_equal(r.port, 443);
	assert_string_equal(r.path, "");
	assert_int_equal(r.head_len, strlen(s) - 5);

	assert_true(parse("CONNECT [2001:DB8::1]:8443 HTTP/1.0\r\n\r\n", &r) > 0);
	assert_string_equal(r.host, "2001:db8::1");
	assert_int_equal(r.port, 8443);
	assert_int_equal(r.http_minor, 0);

	assert_int_equal(parse("CONNECT example.com HTTP/1.1\r\n\r\n", &r), -EINVAL);
	assert_int_equal(parse("CONNECT example.com:0 HTTP/1.1\r\n\r\n", &r), -EINVAL);
	assert_int_equal(parse("CONNECT example.com:65536 HTTP/1.1\r\n\r\n", &r), -EINVAL);
	assert_int_equal(parse("CONNECT example.com:+443 HTTP/1.1\r\n\r\n", &r), -EINVAL);
	assert_int_equal(parse("CONNECT example.com: HTTP/1.1\r\n\r\n", &r), -EINVAL);
	assert_int_equal(parse("CONNECT 2001:db8::1:443 HTTP/1.1\r\n\r\n", &r), -EINVAL);
	assert_int_equal(parse("CONNECT [fe80::1%eth0]:443 HTTP/1.1\r\n\r\n", &r), -EINVAL);
	assert_int_equal(parse("CONNECT user@example.com:443 HTTP/1.1\r\n\r\n", &r), -EINVAL);
	assert_int_equal(parse("CONNECT a..b:443 HTTP/1.1\r\n\r\n", &r), -EINVAL);
	assert_int_equal(parse("CONNECT exa$mple.com:443 HTTP/1.1\r\n\r\n", &r), -EINVAL);
}

static void test_parse_forward(void **state)
{
	struct lg_http_req r;

	assert_true(parse("GET http://Example.com/a/b?c=d#frag HTTP/1.1\r\nHost: EXAMPLE.com\r\n"
			  "Accept: */*\r\n\r\n",
			  &r) > 0);
	assert_int_equal(r.kind, LG_HTTP_FORWARD);
	assert_string_equal(r.method, "GET");
	assert_string_equal(r.host, "example.com");
	assert_int_equal(r.port, 80);
	assert_string_equal(r.path, "/a/b?c=d");
	assert_true(r.has_host);
	assert_int_equal(r.content_length, -1);

	assert_true(parse("HEAD HTTP://x.org:8080 HTTP/1.0\r\n\r\n", &r) > 0);
	assert_string_equal(r.path, "/");
	assert_int_equal(r.port, 8080);
	assert_false(r.has_host);
	assert_true(parse("GET http://x.org?q HTTP/1.1\r\nHost: x.org:80\r\n\r\n", &r) > 0);
	assert_string_equal(r.path, "/?q");
	assert_true(parse("POST http://[::1]:81/p HTTP/1.1\r\nHost: [::1]:81\r\n"
			  "Content-Length: 12\r\n\r\n",
			  &r) > 0);
	assert_string_equal(r.host, "::1");
	assert_int_equal(r.content_length, 12);
	assert_true(parse("POST http://x.org/ HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n", &r) >
		    0);
	assert_true(r.chunked);

	/* Host must agree with the URL: the check is on one, servers route on the other. */
	assert_int_equal(parse("GET http://x.org/ HTTP/1.1\r\nHost: y.org\r\n\r\n", &r), -EINVAL);
	assert_non_null(strstr(r.error, "Host header does not match"));
	assert_int_equal(parse("GET http://x.org/ HTTP/1.1\r\nHost: x.org:81\r\n\r\n", &r),
			 -EINVAL);
	assert_int_equal(parse("GET http://x.org:81/ HTTP/1.1\r\nHost: x.org\r\n\r\n", &r),
			 -EINVAL);
	assert_int_equal(
	    parse("GET http://x.org/ HTTP/1.1\r\nHost: x.org\r\nHost: y.org\r\n\r\n", &r), -EINVAL);
	assert_int_equal(parse("GET http://x.org/ HTTP/1.1\r\nHost: \r\n\r\n", &r), -EINVAL);
	/* Userinfo: one parser's host is another's password. */
	assert_int_equal(parse("GET http://x.org@y.org/ HTTP/1.1\r\n\r\n", &r), -EINVAL);

	/* Not proxy requests. */
	assert_int_equal(parse("GET / HTTP/1.1\r\nHost: x\r\n\r\n", &r), -ENOTSUP);
	assert_int_equal(parse("GET https://x.org/ HTTP/1.1\r\n\r\n", &r), -ENOTSUP);
	assert_non_null(strstr(r.error, "CONNECT"));
	assert_int_equal(parse("GET ftp://x.org/ HTTP/1.1\r\n\r\n", &r), -ENOTSUP);
	assert_int_equal(parse("OPTIONS * HTTP/1.1\r\n\r\n", &r), -ENOTSUP);
	assert_int_equal(
	    parse("POST http://x.org/ HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", &r),
	    -ENOTSUP);

	/* Body framing that two parsers could read two ways. */
	assert_int_equal(parse("POST http://x.org/ HTTP/1.1\r\nContent-Length: 3\r\n"
			       "Transfer-Encoding: chunked\r\n\r\n",
			       &r),
			 -EINVAL);
	assert_int_equal(parse("POST http://x.org/ HTTP/1.1\r\nContent-Length: 3\r\n"
			       "Content-Length: 3\r\n\r\n",
			       &r),
			 -EINVAL);
	assert_int_equal(parse("POST http://x.org/ HTTP/1.1\r\nContent-Length: -3\r\n\r\n", &r),
			 -EINVAL);
	assert_int_equal(parse("POST http://x.org/ HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n", &r),
			 -EINVAL);
	/* For CONNECT, body headers mean nothing and are ignored. */
	assert_true(parse("CONNECT x.org:443 HTTP/1.1\r\nContent-Length: 5\r\n\r\n", &r) > 0);
	assert_int_equal(r.content_length, -1);
}

static void test_parse_malformed(void **state)
{
	static const char *const bad[] = {
	    "\r\n\r\n",
	    "GET\r\n\r\n",
	    "GET http://x.org/\r\n\r\n",
	    "GET http://x.org/ HTTP/1.1 \r\n\r\n",
	    "GET  http://x.org/ HTTP/1.1\r\n\r\n",
	    "GET http://x.org/ HTTP/2.0\r\n\r\n",
	    "GET http://x.org/ HTTP/1.2\r\n\r\n",
	    "GET http://x.org/ http/1.1\r\n\r\n",
	    "G(T http://x.org/ HTTP/1.1\r\n\r\n",
	    "VERYLONGMETHODNAME http://x.org/ HTTP/1.1\r\n\r\n",
	    " GET http://x.org/ HTTP/1.1\r\n\r\n",
	    "GET http://x.org/ HTTP/1.1\r\nBad Name: x\r\n\r\n",
	    "GET http://x.org/ HTTP/1.1\r\nName : x\r\n\r\n",
	    "GET http://x.org/ HTTP/1.1\r\nNoColon\r\n\r\n",
	    "GET http://x.org/ HTTP/1.1\r\n: x\r\n\r\n",
	    "GET http://x.org/ HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
	    "GET http://x.org/ HTTP/1.1\r\nA: b\x01\r\n\r\n",
	    "GET http://x.org/ HTTP/1.1\r\nA: b\x7f\r\n\r\n",
	    "GET http://x.org/\x7f HTTP/1.1\r\n\r\n",
	    "GET http://x.org/\xc3\xa9 HTTP/1.1\r\n\r\n",
	    "GET http://x.org:99999/ HTTP/1.1\r\n\r\n",
	    "GET http://:80/ HTTP/1.1\r\n\r\n",
	    "GET http:///x HTTP/1.1\r\n\r\n",
	};
	struct lg_http_req r;

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		int ret = parse(bad[i], &r);

		if (ret != -EINVAL) {
			fprintf(stderr, "case %zu: '%s' gave %d\n", i, bad[i], ret);
			fail();
		}
		assert_non_null(r.error);
	}
	/* Injection: a bare CR or LF, or a NUL, anywhere in the head. */
	assert_int_equal(parse("GET http://x.org/ HTTP/1.1\nHost: x.org\r\n\r\n", &r), -EINVAL);
	assert_int_equal(parse("GET http://x.org/ HTTP/1.1\r\nA: b\rHost: y\r\n\r\n", &r), -EINVAL);
	assert_int_equal(parse("GET http://x.org/ HTTP/1.1\r\nA: b\nHost: y\r\n\r\n", &r), -EINVAL);
	assert_int_equal(parse("GET http://x.org/ HTTP/1.1\r\n\n", &r), -EINVAL);
	assert_int_equal(
	    lg_http_parse_request("GET http://x.org/ HTTP/1.1\r\nA: b\0c\r\n\r\n", 39, &r),
	    -EINVAL);
	/* A bare LF is refused even before the head is complete. */
	assert_int_equal(parse("GET http://x.org/ HTTP/1.1\n", &r), -EINVAL);
	assert_int_equal(parse("GET http://x.org/ HTTP/1.1\rX", &r), -EINVAL);
}

static void test_parse_partial_and_bounds(void **state)
{
	const char *s = "GET http://x.org/ HTTP/1.1\r\nHost: x.org\r\n\r\n";
	struct lg_http_req r;
	char *big;
	size_t n;

	/* Every proper prefix needs more bytes. */
	for (size_t i = 0; i < strlen(s); i++)
		assert_int_equal(lg_http_parse_request(s, i, &r), 0);
	assert_int_equal(lg_http_parse_request(s, strlen(s), &r), strlen(s));

	/* No end in LG_HTTP_MAX_HEAD bytes: -EMSGSIZE. */
	big = xmalloc(LG_HTTP_MAX_HEAD + 10);
	n = snprintf(big, LG_HTTP_MAX_HEAD, "GET http://x.org/ HTTP/1.1\r\nX: ");
	memset(big + n, 'a', LG_HTTP_MAX_HEAD + 10 - n);
	assert_int_equal(lg_http_parse_request(big, LG_HTTP_MAX_HEAD - 1, &r), 0);
	assert_int_equal(lg_http_parse_request(big, LG_HTTP_MAX_HEAD, &r), -EMSGSIZE);
	assert_int_equal(lg_http_parse_request(big, LG_HTTP_MAX_HEAD + 10, &r), -EMSGSIZE);
	/* A head that ends exactly at the limit is fine (lines under LG_HTTP_MAX_LINE). */
	memcpy(big + 4000, "\r\nY: ", 5);
	memcpy(big + 12000, "\r\nZ: ", 5);
	memcpy(big + LG_HTTP_MAX_HEAD - 4, "\r\n\r\n", 4);
	assert_int_equal(lg_http_parse_request(big, LG_HTTP_MAX_HEAD + 10, &r), LG_HTTP_MAX_HEAD);
	/* One line over LG_HTTP_MAX_LINE. */
	memcpy(big + 4000, "aaaaa", 5);
	assert_int_equal(lg_http_parse_request(big, LG_HTTP_MAX_HEAD + 10, &r), -EMSGSIZE);
	assert_non_null(strstr(r.error, "too long"));
	free(big);

	/* Header count. */
	{
		size_t cap = 8192, len = 0;
		char *h = xmalloc(cap);

		len += snprintf(h + len, cap - len, "GET http://x.org/ HTTP/1.1\r\n");
		for (int i = 0; i < LG_HTTP_MAX_HEADERS; i++)
			len += snprintf(h + len, cap - len, "X-%d: y\r\n", i);
		strcpy(h + len, "\r\n");
		assert_true(lg_http_parse_request(h, len + 2, &r) > 0);
		len += snprintf(h + len, cap - len, "X-last: y\r\n\r\n");
		assert_int_equal(lg_http_parse_request(h, len, &r), -EMSGSIZE);
		free(h);
	}
	/* A path too long for the request struct. */
	{
		static const char pre[] = "GET http://x.org/", post[] = " HTTP/1.1\r\n\r\n";
		char u[sizeof(pre) + 5000 + sizeof(post)];

		memcpy(u, pre, sizeof(pre) - 1);
		memset(u + sizeof(pre) - 1, 'p', 5000);
		memcpy(u + sizeof(pre) - 1 + 5000, post, sizeof(post));
		assert_int_equal(parse(u, &r), -EINVAL);
	}
}

static void test_forward_head(void **state)
{
	const char *s = "POST http://x.org:8080/up?a=1 HTTP/1.1\r\nHost: x.org:8080\r\n"
			"Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic Zm9v\r\n"
			"Connection: keep-alive, X-Secret, Content-Length\r\nX-Secret: s\r\n"
			"Keep-Alive: 5\r\nUpgrade: websocket\r\nTE: trailers\r\nAccept: */*\r\n"
			"Content-Length: 4\r\n\r\nbody";
	struct lg_http_req r;
	size_t n;
	char *h;

	assert_true(parse(s, &r) > 0);
	h = lg_http_forward_head(s, &r, &n);
	assert_int_equal(strlen(h), n);
	assert_string_equal(h, "POST /up?a=1 HTTP/1.1\r\nHost: x.org:8080\r\nAccept: */*\r\n"
			       "Content-Length: 4\r\nConnection: close\r\n\r\n");
	free(h);

	/* Host added when the client gave none. */
	assert_true(parse("GET http://[2001:db8::5]:81/ HTTP/1.0\r\n\r\n", &r) > 0);
	h = lg_http_forward_head("GET http://[2001:db8::5]:81/ HTTP/1.0\r\n\r\n", &r, &n);
	assert_string_equal(
	    h, "GET / HTTP/1.0\r\nHost: [2001:db8::5]:81\r\nConnection: close\r\n\r\n");
	free(h);
	assert_true(parse("GET http://y.org HTTP/1.1\r\n\r\n", &r) > 0);
	h = lg_http_forward_head("GET http://y.org HTTP/1.1\r\n\r\n", &r, &n);
	assert_string_equal(h, "GET / HTTP/1.1\r\nHost: y.org\r\nConnection: close\r\n\r\n");
	free(h);
}

static void test_body_framing(void **state)
{
	struct lg_http_req r = {.kind = LG_HTTP_FORWARD, .content_length = 5};
	struct lg_http_body b;
	const char *chunked = "4;x=y\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n"
			      "Trailer: t\r\n\r\nGET http://other/ HTTP/1.1\r\n\r\n";
	size_t body_len = strlen(chunked) - strlen("GET http://other/ HTTP/1.1\r\n\r\n");

	lg_http_body_init(&b, &r);
	assert_int_equal(lg_http_body_feed(&b, (const uint8_t *)"abc", 3), 3);
	assert_false(lg_http_body_done(&b));
	assert_int_equal(lg_http_body_feed(&b, (const uint8_t *)"deGET /", 7), 2);
	assert_true(lg_http_body_done(&b));
	assert_int_equal(lg_http_body_feed(&b, (const uint8_t *)"x", 1), 0);

	r.content_length = -1;
	lg_http_body_init(&b, &r);
	assert_true(lg_http_body_done(&b));

	/* Chunked, whole and one byte at a time. */
	r.chunked = true;
	lg_http_body_init(&b, &r);
	assert_int_equal(lg_http_body_feed(&b, (const uint8_t *)chunked, strlen(chunked)),
			 body_len);
	assert_true(lg_http_body_done(&b));
	lg_http_body_init(&b, &r);
	for (size_t i = 0; i < body_len; i++) {
		assert_false(lg_http_body_done(&b));
		assert_int_equal(lg_http_body_feed(&b, (const uint8_t *)chunked + i, 1), 1);
	}
	assert_true(lg_http_body_done(&b));

	static const char *const bad[] = {
	    "x\r\n",
	    "\r\n",
	    "4\nWiki",
	    "4\r\nWikiX",
	    "4\r\nWiki\rX",
	    "0\r\nA\nB",
	    "1234567890123456\r\n",
	    "0\r\n\rX",
	    "4;a\nb",
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		lg_http_body_init(&b, &r);
		if (lg_http_body_feed(&b, (const uint8_t *)bad[i], strlen(bad[i])) != -EINVAL) {
			fprintf(stderr, "chunked case %zu accepted\n", i);
			fail();
		}
	}
}

/* ---- TLS SNI ------------------------------------------------------------ */

/* A ClientHello handshake message: nsni server_name extensions naming sni. */
static size_t build_handshake(uint8_t *out, const char *sni, int nsni)
{
	uint8_t body[1024];
	size_t n = 0, ext_start;

	body[n++] = 3;
	body[n++] = 3;
	memset(body + n, 0x42, 32);
	n += 32;
	body[n++] = 0; /* session id */
	body[n++] = 0;
	body[n++] = 2;
	body[n++] = 0x13;
	body[n++] = 0x01;
	body[n++] = 1; /* compression */
	body[n++] = 0;
	ext_start = n;
	n += 2;
	/* supported_versions first, so SNI is not the first extension. */
	body[n++] = 0x00;
	body[n++] = 0x2b;
	body[n++] = 0;
	body[n++] = 3;
	body[n++] = 2;
	body[n++] = 3;
	body[n++] = 4;
	for (int i = 0; i < nsni; i++) {
		size_t l = strlen(sni);

		body[n++] = 0;
		body[n++] = 0;
		body[n++] = (l + 5) >> 8;
		body[n++] = (l + 5) & 0xff;
		body[n++] = (l + 3) >> 8;
		body[n++] = (l + 3) & 0xff;
		body[n++] = 0;
		body[n++] = l >> 8;
		body[n++] = l & 0xff;
		memcpy(body + n, sni, l);
		n += l;
	}
	body[ext_start] = (n - ext_start - 2) >> 8;
	body[ext_start + 1] = (n - ext_start - 2) & 0xff;
	out[0] = 1;
	out[1] = 0;
	out[2] = n >> 8;
	out[3] = n & 0xff;
	memcpy(out + 4, body, n);
	return n + 4;
}

/* The handshake in records of at most frag bytes. */
static size_t build_records(uint8_t *out, const uint8_t *hs, size_t n, size_t frag)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i += frag) {
		size_t k = n - i < frag ? n - i : frag;

		out[o++] = 0x16;
		out[o++] = 3;
		out[o++] = 1;
		out[o++] = k >> 8;
		out[o++] = k & 0xff;
		memcpy(out + o, hs + i, k);
		o += k;
	}
	return o;
}

static void sni_truncations(const uint8_t *rec, size_t n, int want, const char *want_name)
{
	char name[256];

	for (size_t i = 0; i < n; i++) {
		uint8_t *copy = xmalloc(i + 1); /* exactly i bytes for ASan to police */
		int r;

		memcpy(copy, rec, i);
		r = lg_tls_sni(copy, i, name, sizeof(name));
		free(copy);
		if (r != 0) {
			fprintf(stderr, "truncated at %zu of %zu: %d\n", i, n, r);
			fail();
		}
	}
	assert_int_equal(lg_tls_sni(rec, n, name, sizeof(name)), want);
	if (want_name != NULL)
		assert_string_equal(name, want_name);
}

static void test_tls_sni(void **state)
{
	uint8_t hs[1200] = {0}, rec[1400] = {0}, bad[1400] = {0};
	char name[256];
	size_t hn, rn;
	FILE *f;

	hn = build_handshake(hs, "Api.Example.COM.", 1);
	rn = build_records(rec, hs, hn, 16384);
	sni_truncations(rec, rn, 1, "api.example.com");
	/* Split over records, even the handshake header. */
	rn = build_records(rec, hs, hn, 3);
	sni_truncations(rec, rn, 1, "api.example.com");

	hn = build_handshake(hs, "x", 0);
	rn = build_records(rec, hs, hn, 16384);
	sni_truncations(rec, rn, -ENOENT, NULL);

	/* Two server_name extensions: which would the server believe? */
	hn = build_handshake(hs, "a.example", 2);
	rn = build_records(rec, hs, hn, 16384);
	assert_int_equal(lg_tls_sni(rec, rn, name, sizeof(name)), -EPROTO);

	/* A name that does not fit, or is not a host name. */
	hn = build_handshake(hs, "a.example", 1);
	rn = build_records(rec, hs, hn, 16384);
	assert_int_equal(lg_tls_sni(rec, rn, name, 5), -EPROTO);
	hn = build_handshake(hs, "a\x01.example", 1);
	rn = build_records(rec, hs, hn, 16384);
	assert_int_equal(lg_tls_sni(rec, rn, name, sizeof(name)), -EPROTO);

	/* Not TLS at all. */
	assert_int_equal(lg_tls_sni((const uint8_t *)"SSH-2.0-x\r\n", 11, name, sizeof(name)),
			 -EINVAL);
	assert_int_equal(lg_tls_sni((const uint8_t *)"", 0, name, sizeof(name)), 0);

	/* Mutations of a good hello: lengths and types. */
	hn = build_handshake(hs, "a.example", 1);
	rn = build_records(rec, hs, hn, 16384);
	memcpy(bad, rec, rn);
	bad[5] = 2; /* server_hello */
	assert_int_equal(lg_tls_sni(bad, rn, name, sizeof(name)), -EPROTO);
	memcpy(bad, rec, rn);
	bad[1] = 2;
	assert_int_equal(lg_tls_sni(bad, rn, name, sizeof(name)), -EPROTO);
	memcpy(bad, rec, rn);
	bad[3] = 0x40; /* record over 2^14 */
	assert_int_equal(lg_tls_sni(bad, rn, name, sizeof(name)), -EPROTO);
	memcpy(bad, rec, rn);
	bad[3] = 0;
	bad[4] = 0; /* empty record */
	assert_int_equal(lg_tls_sni(bad, rn, name, sizeof(name)), -EPROTO);
	memcpy(bad, rec, rn);
	bad[5 + 4 + 34] = 33; /* session id too long */
	assert_int_equal(lg_tls_sni(bad, rn, name, sizeof(name)), -EPROTO);
	/* Every single-byte change: never a crash, never a result outside the contract. */
	for (size_t i = 0; i < rn; i++) {
		for (int v = 0; v < 256; v += 17) {
			int r;

			memcpy(bad, rec, rn);
			bad[i] = v;
			r = lg_tls_sni(bad, rn, name, sizeof(name));
			assert_true(r >= -EPROTO && r <= 1);
		}
	}

	/* A real ClientHello (Python's ssl, server_hostname='Example.COM'). */
	f = fopen(LG_SOURCE_DIR "/fuzz/corpus/http/clienthello-python-ssl", "rb");
	assert_non_null(f);
	rn = fread(rec, 1, sizeof(rec), f);
	fclose(f);
	assert_true(rn > 200);
	sni_truncations(rec, rn, 1, "example.com");
}

/* ---- whole connections -------------------------------------------------- */

enum srv_mode { SRV_ECHO, SRV_HTTP, SRV_BANNER };

/* A TCP server on 127.0.0.1: records what it reads, answers, counts accepts. */
struct srv {
	int lfd;
	uint16_t port;
	enum srv_mode mode;
	pthread_t th;
	pthread_mutex_t mu;
	int accepts;
	char got[65536];
	size_t got_len;
	bool stop;
};

static void *srv_main(void *arg)
{
	struct srv *s = arg;

	for (;;) {
		int fd = accept(s->lfd, NULL, NULL);
		char buf[4096];
		ssize_t n;

		if (fd < 0)
			return NULL;
		pthread_mutex_lock(&s->mu);
		if (s->stop) {
			pthread_mutex_unlock(&s->mu);
			close(fd);
			return NULL;
		}
		s->accepts++;
		s->got_len = 0;
		pthread_mutex_unlock(&s->mu);
		/* A server that speaks first, as SSH and SMTP do. */
		if (s->mode == SRV_BANNER && write(fd, "SSH-2.0-srv\r\n", 13) != 13)
			fprintf(stderr, "srv: short write\n");
		while ((n = read(fd, buf, sizeof(buf))) > 0) {
			pthread_mutex_lock(&s->mu);
			if (s->got_len + n <= sizeof(s->got)) {
				memcpy(s->got + s->got_len, buf, n);
				s->got_len += n;
			}
			pthread_mutex_unlock(&s->mu);
			if (s->mode != SRV_HTTP && write(fd, buf, n) != n)
				break;
		}
		if (s->mode == SRV_HTTP) {
			static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
						   "Connection: close\r\n\r\nhello";

			/* No cmocka asserts off the main thread. */
			if (write(fd, resp, sizeof(resp) - 1) != sizeof(resp) - 1)
				fprintf(stderr, "srv: short write\n");
		}
		close(fd);
	}
}

static struct srv *srv_start(enum srv_mode mode)
{
	struct srv *s = xzalloc(sizeof(*s));
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);

	s->mode = mode;
	pthread_mutex_init(&s->mu, NULL);
	s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(s->lfd >= 0);
	assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(s->lfd, 16), 0);
	assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &al), 0);
	s->port = ntohs(a.sin_port);
	assert_int_equal(pthread_create(&s->th, NULL, srv_main, s), 0);
	return s;
}

static int srv_count(struct srv *s)
{
	struct tcp_info ti;
	socklen_t tl = sizeof(ti);
	int n;

	assert_int_equal(getsockopt(s->lfd, IPPROTO_TCP, TCP_INFO, &ti, &tl), 0);
	pthread_mutex_lock(&s->mu);
	n = s->accepts + (int)ti.tcpi_unacked;
	pthread_mutex_unlock(&s->mu);
	return n;
}

/*
 * Connections the server has had: accepted, plus those still in the
 * listen queue (TCP_INFO on a listening socket reports its length), so a
 * connection the proxy made cannot hide between connect() and accept().
 * Waits up to 2 s for want, then a little longer for any extra.
 */
static int srv_conns(struct srv *s, int want)
{
	uint64_t t0 = lg_now_ms();

	while (srv_count(s) < want && lg_now_ms() - t0 < 2000)
		usleep(5000);
	usleep(20000);
	return srv_count(s);
}

static void srv_stop(struct srv *s)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				.sin_port = htons(s->port)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	pthread_mutex_lock(&s->mu);
	s->stop = true;
	pthread_mutex_unlock(&s->mu);
	/* Wake accept(). */
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	pthread_join(s->th, NULL);
	close(fd);
	close(s->lfd);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

/* The proxy side: eg, its log, its ask callback. */
struct px {
	struct lg_egress eg;
	struct lg_allowlist *al;
	pthread_mutex_t mu;
	int nlog;
	struct {
		char host[256], method[16], address[64], reason[512];
		uint16_t port;
		enum lg_egress_verdict verdict;
		bool has_reason, has_address;
		uint64_t up, down;
	} last;
	int nask;
	bool answer;
	char asked[300];
};

static void px_log(void *ctx, const struct lg_egress_event *ev)
{
	struct px *p = ctx;

	pthread_mutex_lock(&p->mu);
	p->nlog++;
	snprintf(p->last.host, sizeof(p->last.host), "%s", ev->host ? ev->host : "");
	snprintf(p->last.method, sizeof(p->last.method), "%s", ev->method ? ev->method : "");
	p->last.has_address = ev->address != NULL;
	snprintf(p->last.address, sizeof(p->last.address), "%s", ev->address ? ev->address : "");
	p->last.has_reason = ev->reason != NULL;
	snprintf(p->last.reason, sizeof(p->last.reason), "%s", ev->reason ? ev->reason : "");
	p->last.port = ev->port;
	p->last.verdict = ev->verdict;
	p->last.up = ev->bytes_up;
	p->last.down = ev->bytes_down;
	pthread_mutex_unlock(&p->mu);
}

static bool px_ask(void *ctx, const char *host, uint16_t port)
{
	struct px *p = ctx;

	pthread_mutex_lock(&p->mu);
	p->nask++;
	snprintf(p->asked, sizeof(p->asked), "%s:%u", host, port);
	pthread_mutex_unlock(&p->mu);
	return p->answer;
}

static struct px *px_new(const char *spec)
{
	struct px *p = xzalloc(sizeof(*p));

	p->al = parse_ok(spec);
	pthread_mutex_init(&p->mu, NULL);
	lg_egress_init(&p->eg, p->al);
	p->eg.log = px_log;
	p->eg.log_ctx = p;
	p->eg.connect_timeout_ms = 2000;
	p->eg.idle_timeout_ms = 5000;
	p->eg.head_timeout_ms = 2000;
	return p;
}

static void px_free(struct px *p)
{
	lg_egress_fini(&p->eg);
	lg_allowlist_free(p->al);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

struct conn_thread {
	struct lg_egress *eg;
	int fd;
	pthread_t th;
};

static void *serve_main(void *arg)
{
	struct conn_thread *t = arg;

	lg_egress_serve(t->eg, t->fd);
	return NULL;
}

/* A proxied connection: returns the guest's end; *t runs lg_egress_serve. */
static int px_connect(struct px *p, struct conn_thread *t)
{
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	t->eg = &p->eg;
	t->fd = sv[1];
	assert_int_equal(pthread_create(&t->th, NULL, serve_main, t), 0);
	return sv[0];
}

static void px_join(struct conn_thread *t, int fd)
{
	close(fd);
	pthread_join(t->th, NULL);
}

static void send_str(int fd, const char *s)
{
	assert_int_equal(write(fd, s, strlen(s)), (ssize_t)strlen(s));
}

/* Reads until EOF (or 5 s without bytes); NUL-terminated. */
static size_t read_all(int fd, char *buf, size_t cap)
{
	size_t n = 0;

	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		ssize_t r;

		assert_int_equal(poll(&pfd, 1, 15000), 1);
		r = read(fd, buf + n, cap - 1 - n);
		if (r <= 0)
			break;
		n += r;
	}
	buf[n] = '\0';
	return n;
}

/* Reads exactly n bytes (5 s limit). */
static void read_n(int fd, char *buf, size_t n)
{
	size_t got = 0;

	while (got < n) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		ssize_t r;

		assert_int_equal(poll(&pfd, 1, 5000), 1);
		r = read(fd, buf + got, n - got);
		assert_true(r > 0);
		got += r;
	}
	buf[got] = '\0';
}

static void test_connect_tunnel(void **state)
{
	struct srv *s = srv_start(SRV_ECHO);
	cleanup_free char *spec = xasprintf("127.0.0.1:%u", s->port);
	struct px *p = px_new(spec);
	struct conn_thread t;
	int fd = px_connect(p, &t);
	char buf[256], *req;

	req = xasprintf("CONNECT 127.0.0.1:%u HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n\r\n", s->port,
			s->port);
	send_str(fd, req);
	free(req);
	read_n(fd, buf, strlen("HTTP/1.1 200 Connection established\r\n\r\n"));
	assert_string_equal(buf, "HTTP/1.1 200 Connection established\r\n\r\n");
	/* Not TLS: fine, the destination was checked. */
	send_str(fd, "ping 1");
	read_n(fd, buf, 6);
	assert_string_equal(buf, "ping 1");
	send_str(fd, "second");
	read_n(fd, buf, 6);
	assert_string_equal(buf, "second");
	/* Half-close passes through: the server sees EOF, closes, we see EOF. */
	shutdown(fd, SHUT_WR);
	assert_int_equal(read_all(fd, buf, sizeof(buf)), 0);
	px_join(&t, fd);

	assert_int_equal(p->nlog, 1);
	assert_string_equal(p->last.host, "127.0.0.1");
	assert_int_equal(p->last.port, s->port);
	assert_string_equal(p->last.method, "CONNECT");
	assert_string_equal(p->last.address, "127.0.0.1");
	assert_int_equal(p->last.verdict, LG_EGRESS_ALLOWED);
	assert_false(p->last.has_reason);
	assert_int_equal(p->last.up, 12);
	assert_int_equal(p->last.down, 12);
	assert_int_equal(srv_conns(s, 1), 1);
	px_free(p);
	srv_stop(s);
}

static void test_connect_server_speaks_first(void **state)
{
	struct srv *s = srv_start(SRV_BANNER);
	cleanup_free char *spec = xasprintf("127.0.0.1:%u", s->port);
	cleanup_free char *req = xasprintf("CONNECT 127.0.0.1:%u HTTP/1.1\r\n\r\n", s->port);
	struct px *p = px_new(spec);
	struct conn_thread t;
	int fd = px_connect(p, &t);
	char buf[256];

	/* The SNI check waits for the client's first bytes; the server's pass. */
	send_str(fd, req);
	read_n(fd, buf, strlen("HTTP/1.1 200 Connection established\r\n\r\n") + 13);
	assert_non_null(strstr(buf, "\r\n\r\nSSH-2.0-srv\r\n"));
	send_str(fd, "SSH-2.0-cli\r\n");
	read_n(fd, buf, 13);
	assert_string_equal(buf, "SSH-2.0-cli\r\n");
	px_join(&t, fd);
	assert_int_equal(p->last.verdict, LG_EGRESS_ALLOWED);
	assert_int_equal(p->last.up, 13);
	assert_int_equal(p->last.down, 26);
	px_free(p);
	srv_stop(s);
}

static void test_forward_get(void **state)
{
	struct srv *s = srv_start(SRV_HTTP);
	cleanup_free char *spec = xasprintf("127.0.0.1:%u", s->port);
	struct px *p = px_new(spec);
	struct conn_thread t;
	int fd = px_connect(p, &t);
	char buf[4096], *req, *want;

	req = xasprintf("GET http://127.0.0.1:%u/x?y=1 HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n"
			"Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic eDp5\r\n"
			"User-Agent: t\r\n\r\n",
			s->port, s->port);
	send_str(fd, req);
	free(req);
	/* The client is done sending: the proxy passes the EOF on, the server answers. */
	shutdown(fd, SHUT_WR);
	read_all(fd, buf, sizeof(buf));
	assert_string_equal(buf, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
				 "hello");
	px_join(&t, fd);

	want = xasprintf("GET /x?y=1 HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nUser-Agent: t\r\n"
			 "Connection: close\r\n\r\n",
			 s->port);
	pthread_mutex_lock(&s->mu);
	s->got[s->got_len] = '\0';
	assert_string_equal(s->got, want);
	pthread_mutex_unlock(&s->mu);
	assert_int_equal(p->nlog, 1);
	assert_string_equal(p->last.method, "GET");
	assert_int_equal(p->last.verdict, LG_EGRESS_ALLOWED);
	assert_int_equal(p->last.up, strlen(want));
	assert_int_equal(p->last.down, strlen(buf));
	free(want);
	px_free(p);
	srv_stop(s);
}

static void test_forward_body_then_pipelined(void **state)
{
	struct srv *s = srv_start(SRV_HTTP);
	cleanup_free char *spec = xasprintf("127.0.0.1:%u", s->port);
	struct px *p = px_new(spec);
	struct conn_thread t;
	int fd = px_connect(p, &t);
	char buf[4096], *req;

	/*
	 * A body, then a second request for another host: only the body may
	 * reach the server, or the server would answer the second one.
	 */
	req = xasprintf("POST http://127.0.0.1:%u/up HTTP/1.1\r\nContent-Length: 5\r\n\r\n"
			"abcde"
			"GET http://127.0.0.1:%u/ HTTP/1.1\r\nHost: internal.example\r\n\r\n",
			s->port, s->port);
	send_str(fd, req);
	free(req);
	shutdown(fd, SHUT_WR);
	read_all(fd, buf, sizeof(buf));
	assert_non_null(strstr(buf, "hello"));
	px_join(&t, fd);
	pthread_mutex_lock(&s->mu);
	s->got[s->got_len] = '\0';
	req = xasprintf("POST /up HTTP/1.1\r\nContent-Length: 5\r\nHost: 127.0.0.1:%u\r\n"
			"Connection: close\r\n\r\nabcde",
			s->port);
	assert_string_equal(s->got, req);
	free(req);
	pthread_mutex_unlock(&s->mu);
	px_free(p);
	srv_stop(s);
}

/* One request; returns the proxy's whole answer in buf. */
static void one_request(struct px *p, const char *req, char *buf, size_t cap)
{
	struct conn_thread t;
	int fd = px_connect(p, &t);

	send_str(fd, req);
	read_all(fd, buf, cap);
	px_join(&t, fd);
}

/* A CONNECT that should succeed: reads the 200, then hangs up. */
static void connect_ok(struct px *p, const char *req)
{
	static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
	struct conn_thread t;
	char buf[sizeof(ok)];
	int fd = px_connect(p, &t);

	send_str(fd, req);
	read_n(fd, buf, sizeof(ok) - 1);
	assert_string_equal(buf, ok);
	px_join(&t, fd);
}

/*
 * Whether "localhost" resolves to 127.0.0.1 here.  It does wherever
 * /etc/hosts says so (every installed system); a bare debootstrap chroot
 * has no /etc/hosts, and the cases that need the name say they skip.
 */
static bool localhost_resolves(void)
{
	struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
	bool ok = getaddrinfo("localhost", NULL, &hints, &res) == 0 && res != NULL &&
		  ((struct sockaddr_in *)res->ai_addr)->sin_addr.s_addr == htonl(INADDR_LOOPBACK);

	if (res != NULL)
		freeaddrinfo(res);
	if (!ok)
		fprintf(stderr,
			"# 'localhost' does not resolve to 127.0.0.1 here (no /etc/hosts?): "
			"the cases that need it are skipped\n");
	return ok;
}

static void test_localhost_by_name_refused(void **state)
{
	if (!localhost_resolves())
		skip(); /* before anything is allocated: skip() longjmps */

	struct srv *s = srv_start(SRV_ECHO);
	cleanup_free char *spec = xasprintf("localhost:%u", s->port);
	cleanup_free char *req = xasprintf("CONNECT localhost:%u HTTP/1.1\r\n\r\n", s->port);
	struct px *p = px_new(spec);
	char buf[1024];

	/* Allowed by name, but the name resolves into loopback. */
	one_request(p, req, buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 403 Forbidden\r\n"));
	assert_non_null(strstr(buf, "luminaguard: localhost resolves to 127.0.0.1, loopback"));
	assert_int_equal(srv_conns(s, 0), 0);
	assert_int_equal(p->last.verdict, LG_EGRESS_DENIED);
	assert_string_equal(p->last.address, "127.0.0.1");
	px_free(p);

	/* With the address allowed as well, it goes through. */
	free(spec);
	spec = xasprintf("localhost:%u, 127.0.0.0/8:%u", s->port, s->port);
	p = px_new(spec);
	connect_ok(p, req);
	assert_int_equal(p->last.verdict, LG_EGRESS_ALLOWED);
	assert_int_equal(srv_conns(s, 1), 1);
	px_free(p);
	srv_stop(s);
}

static void test_not_allowed(void **state)
{
	struct srv *s = srv_start(SRV_ECHO);
	cleanup_free char *req = xasprintf("CONNECT 93.184.216.34:%u HTTP/1.1\r\n\r\n", s->port);
	struct px *p = px_new("pypi.org");
	char buf[1024], *want, *body;

	one_request(p, req, buf, sizeof(buf));
	body = xasprintf("luminaguard: 93.184.216.34:%u is not on this sandbox's allowlist\n",
			 s->port);
	want = xasprintf("HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\n"
			 "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
			 strlen(body), body);
	assert_string_equal(buf, want);
	free(want);
	free(body);
	assert_non_null(strstr(buf, "is not on this sandbox's allowlist"));
	assert_int_equal(srv_conns(s, 0), 0);

	one_request(p, "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n", buf,
		    sizeof(buf));
	assert_non_null(strstr(
	    buf, "\r\n\r\nluminaguard: example.com:80 is not on this sandbox's allowlist\n"));
	assert_int_equal(p->nlog, 2);
	assert_string_equal(p->last.host, "example.com");
	assert_string_equal(p->last.method, "GET");
	assert_int_equal(p->last.verdict, LG_EGRESS_DENIED);
	assert_false(p->last.has_address);
	assert_string_equal(p->last.reason, "example.com:80 is not on this sandbox's allowlist");
	assert_int_equal(p->last.up, 0);
	assert_int_equal(p->last.down, 0);
	assert_int_equal(srv_conns(s, 0), 0);
	px_free(p);
	srv_stop(s);
}

static void test_ask(void **state)
{
	struct srv *s = srv_start(SRV_ECHO);
	cleanup_free char *spec = xasprintf("127.0.0.1:%u", s->port);
	cleanup_free char *req_name = xasprintf("CONNECT LocalHost:%u HTTP/1.1\r\n\r\n", s->port);
	cleanup_free char *asked = xasprintf("localhost:%u", s->port);
	struct px *p = px_new("pypi.org");
	char buf[1024];
	char *str;

	p->eg.ask = px_ask;
	p->eg.ask_ctx = p;

	/* Denied by the human: nothing is dialled. */
	p->answer = false;
	one_request(p, "CONNECT 93.184.216.34:443 HTTP/1.1\r\n\r\n", buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 403 Forbidden"));
	assert_non_null(strstr(buf, "93.184.216.34:443 is not on this sandbox's allowlist"));
	assert_int_equal(p->nask, 1);
	assert_string_equal(p->asked, "93.184.216.34:443");
	assert_int_equal(p->last.verdict, LG_EGRESS_DENIED);
	assert_false(p->last.has_address);
	px_free(p);

	if (!localhost_resolves()) {
		srv_stop(s);
		return;
	}
	/*
	 * Approved: through, and remembered.  The test server is on
	 * loopback, which the host-written address entry opens; the approval
	 * only put the name on the list.
	 */
	p = px_new(spec);
	p->eg.ask = px_ask;
	p->eg.ask_ctx = p;
	p->answer = true;
	connect_ok(p, req_name);
	assert_int_equal(p->nask, 1);
	assert_string_equal(p->asked, asked);
	assert_int_equal(srv_conns(s, 1), 1);
	str = lg_allowlist_str(p->al);
	{
		cleanup_free char *want = xasprintf("%s, %s (approved)", spec, asked);

		assert_string_equal(str, want);
	}
	free(str);
	p->answer = false;
	connect_ok(p, req_name);
	assert_int_equal(p->nask, 1);
	assert_int_equal(srv_conns(s, 2), 2);
	px_free(p);

	/* Approving a name does not open what it resolves to: localhost is loopback. */
	p = px_new("pypi.org");
	p->eg.ask = px_ask;
	p->eg.ask_ctx = p;
	p->answer = true;
	one_request(p, req_name, buf, sizeof(buf));
	assert_int_equal(p->nask, 1);
	assert_non_null(strstr(buf, "HTTP/1.1 403 Forbidden"));
	assert_non_null(strstr(buf, "loopback"));
	assert_int_equal(srv_conns(s, 2), 2);
	px_free(p);
	srv_stop(s);
}

/*
 * Issue 8: approving the literal 127.0.0.1:PORT used to add an address
 * entry, which opened the host's loopback, and a guest read a file from a
 * server bound only there.  With a human who approves everything, nothing
 * on this host's loopback (or in another forbidden range) is reachable,
 * and address literals there are refused before anyone is asked.
 */
static void test_approval_never_opens_host(void **state)
{
	/* CONNECT targets (host as in the request line), and one GET. */
	static const char *const hosts[] = {
	    "127.0.0.1", "127.0.0.2", "[::1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "0.0.0.0",
	    "[::]",
	    /* IPv4 in the notations the resolver also reads (inet_aton). */
	    "127.1", "2130706433", "0x7f.1", "017700000001", "169.254.169.254", "10.1.2.3",
	    "[fe80::1]", NULL, /* the GET */
	};
	struct srv *s = srv_start(SRV_HTTP);
	struct px *p = px_new("pypi.org");
	struct lg_err *err = NULL;
	char buf[2048];

	p->eg.ask = px_ask;
	p->eg.ask_ctx = p;
	p->answer = true;
	for (size_t i = 0; i < ARRAY_SIZE(hosts); i++) {
		cleanup_free char *req =
		    hosts[i] ? xasprintf("CONNECT %s:%u HTTP/1.1\r\n\r\n", hosts[i], s->port)
			     : xasprintf("GET http://127.0.0.1:%u/secret HTTP/1.1\r\nHost: "
					 "127.0.0.1:%u\r\n\r\n",
					 s->port, s->port);

		one_request(p, req, buf, sizeof(buf));
		if (strstr(buf, "HTTP/1.1 403 Forbidden\r\n") == NULL || p->nask != 0)
			fail_msg("%s: asked %d times, answer: %s", req, p->nask, buf);
		assert_int_equal(p->last.verdict, LG_EGRESS_DENIED);
	}
	/* The answer says plainly what the destination is, and that no yes opens it. */
	{
		cleanup_free char *req =
		    xasprintf("CONNECT 127.0.0.1:%u HTTP/1.1\r\n\r\n", s->port);
		cleanup_free char *want =
		    xasprintf("luminaguard: 127.0.0.1:%u is loopback (127.0.0.0/8): a sandbox may "
			      "not reach it, and no approval can open it",
			      s->port);

		one_request(p, req, buf, sizeof(buf));
		assert_non_null(strstr(buf, want));
		assert_string_equal(p->last.address, "127.0.0.1");
		free(req);
		req = xasprintf("CONNECT 127.1:%u HTTP/1.1\r\n\r\n", s->port);
		one_request(p, req, buf, sizeof(buf));
		assert_non_null(strstr(
		    buf, "luminaguard: 127.1 is the IPv4 address 127.0.0.1 in a legacy notation"));
	}
	assert_int_equal(p->nask, 0);

	/* A name that resolves to loopback is asked, and refused after the yes. */
	if (localhost_resolves()) {
		cleanup_free char *req =
		    xasprintf("CONNECT localhost:%u HTTP/1.1\r\n\r\n", s->port);

		one_request(p, req, buf, sizeof(buf));
		assert_int_equal(p->nask, 1);
		assert_non_null(strstr(buf, "HTTP/1.1 403 Forbidden\r\n"));
		assert_non_null(strstr(buf, "resolves to 127.0.0.1, loopback"));
		/* Remembered as approved, and still refused at every dial. */
		one_request(p, req, buf, sizeof(buf));
		assert_int_equal(p->nask, 1);
		assert_non_null(strstr(buf, "HTTP/1.1 403 Forbidden\r\n"));
	}

	/*
	 * Even an approved address entry for loopback, however it got on the
	 * list, opens nothing: the dial checks the address again.
	 */
	{
		cleanup_free char *entry = xasprintf("127.0.0.1:%u", s->port);
		cleanup_free char *req =
		    xasprintf("CONNECT 127.0.0.1:%u HTTP/1.1\r\n\r\n", s->port);

		assert_int_equal(lg_allowlist_add_approved(p->al, entry, &err), 0);
		one_request(p, req, buf, sizeof(buf));
		assert_non_null(strstr(buf, "HTTP/1.1 403 Forbidden\r\n"));
	}
	assert_int_equal(srv_conns(s, 0), 0);
	px_free(p);
	srv_stop(s);
}

/* ifname up, with addr (IPv4) as its address when given. */
static void if_up(const char *ifname, const char *addr)
{
	struct ifreq ifr = {0};
	cleanup_close int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	if (addr != NULL) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;

		sin->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, addr, &sin->sin_addr), 1);
		assert_int_equal(ioctl(fd, SIOCSIFADDR, &ifr), 0);
	}
	assert_int_equal(ioctl(fd, SIOCGIFFLAGS, &ifr), 0);
	ifr.ifr_flags |= IFF_UP;
	assert_int_equal(ioctl(fd, SIOCSIFFLAGS, &ifr), 0);
}

static bool on_host(const char *addr)
{
	struct sockaddr_storage ss = sa_of(addr, 443);

	return lg_addr_on_host((struct sockaddr *)&ss);
}

/*
 * The host's own addresses are refused like loopback, whatever range they
 * are in: a service bound to the wildcard (or to that address) answers
 * there.  In a network namespace of this test's own (root only), a
 * public address, 1.2.3.4, is put on an interface: it is then "this
 * host's", and an approve-everything human still cannot open it.  Runs
 * last; the namespace is left at the end.
 */
static void test_host_own_address(void **state)
{
	int saved = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);

	if (saved < 0 || unshare(CLONE_NEWNET) < 0) {
		fprintf(stderr, "# no network namespace of its own (%s; needs root): skipped\n",
			strerror(errno));
		if (saved >= 0)
			close(saved);
		skip(); /* before anything is allocated: skip() longjmps */
	}

	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t al = sizeof(a);
	struct px *p;
	char buf[2048];
	int lfd, c;
	uint16_t port;

	if_up("lo", NULL);
	if_up("lo:1", "1.2.3.4");
	assert_true(on_host("1.2.3.4"));
	assert_true(on_host("::ffff:1.2.3.4"));
	assert_true(on_host("127.0.0.1"));
	assert_false(on_host("1.2.3.5"));
	assert_false(on_host("2001:4860::1"));

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	assert_true(lfd >= 0);
	assert_int_equal(inet_pton(AF_INET, "1.2.3.4", &a.sin_addr), 1);
	assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(lfd, 8), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &al), 0);
	port = ntohs(a.sin_port);

	p = px_new("pypi.org");
	p->eg.ask = px_ask;
	p->eg.ask_ctx = p;
	p->answer = true;
	{
		cleanup_free char *req = xasprintf("CONNECT 1.2.3.4:%u HTTP/1.1\r\n\r\n", port);
		cleanup_free char *get = xasprintf(
		    "GET http://1.2.3.4:%u/ HTTP/1.1\r\nHost: 1.2.3.4:%u\r\n\r\n", port, port);

		one_request(p, req, buf, sizeof(buf));
		assert_non_null(strstr(buf, "HTTP/1.1 403 Forbidden\r\n"));
		assert_non_null(strstr(buf, "an address of this host's own network interfaces"));
		one_request(p, get, buf, sizeof(buf));
		assert_non_null(strstr(buf, "HTTP/1.1 403 Forbidden\r\n"));
	}
	assert_int_equal(p->nask, 0);
	px_free(p);
	usleep(20000);
	c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	assert_true(c < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));

	/* Written on the host, the address opens. */
	{
		cleanup_free char *spec = xasprintf("1.2.3.4:%u", port);
		cleanup_free char *req = xasprintf("CONNECT 1.2.3.4:%u HTTP/1.1\r\n\r\n", port);

		p = px_new(spec);
		connect_ok(p, req);
		px_free(p);
	}
	c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	assert_true(c >= 0);
	close(c);
	close(lfd);
	assert_int_equal(setns(saved, CLONE_NEWNET), 0);
	close(saved);
}

/* Card sentences: what an approval can and cannot open. */
static void test_dest_note(void **state)
{
	assert_non_null(strstr(lg_egress_dest_note("93.184.216.34"), "public IP address"));
	assert_non_null(strstr(lg_egress_dest_note("2606:2800:220:1::1"), "public IP address"));
	assert_non_null(strstr(lg_egress_dest_note("LOCALHOST."), "this host itself"));
	assert_non_null(strstr(lg_egress_dest_note("db.localhost"), "this host itself"));
	assert_non_null(strstr(lg_egress_dest_note("pypi.org"), "resolved only after approval"));
	assert_non_null(strstr(lg_egress_dest_note("pypi.org"), "refused whatever the answer"));
}

static void test_sni(void **state)
{
	struct srv *s = srv_start(SRV_ECHO);
	cleanup_free char *spec = xasprintf("127.0.0.1:%u", s->port);
	cleanup_free char *req = xasprintf("CONNECT 127.0.0.1:%u HTTP/1.1\r\n\r\n", s->port);
	struct px *p = px_new(spec);
	uint8_t hs[1200] = {0}, rec[1400] = {0};
	size_t hn, rn;
	struct conn_thread t;
	char buf[2048];
	int fd;

	/*
	 * The tunnel is to 127.0.0.1 but the hello asks for another name: the
	 * ClientHello must not reach the server.
	 */
	hn = build_handshake(hs, "other.example", 1);
	rn = build_records(rec, hs, hn, 100);
	fd = px_connect(p, &t);
	send_str(fd, req);
	read_n(fd, buf, strlen("HTTP/1.1 200 Connection established\r\n\r\n"));
	assert_int_equal(write(fd, rec, 50), 50); /* in two pieces */
	usleep(20000);
	assert_int_equal(write(fd, rec + 50, rn - 50), (ssize_t)(rn - 50));
	assert_int_equal(read_all(fd, buf, sizeof(buf)), 0);
	px_join(&t, fd);
	assert_int_equal(p->last.verdict, LG_EGRESS_DENIED);
	assert_string_equal(p->last.reason,
			    "SNI other.example does not match CONNECT host 127.0.0.1");
	assert_int_equal(p->last.up, 0);
	/* It dialled, but sent nothing. */
	assert_int_equal(srv_conns(s, 1), 1);
	pthread_mutex_lock(&s->mu);
	assert_int_equal(s->got_len, 0);
	pthread_mutex_unlock(&s->mu);
	px_free(p);

	/* Half a hello, then EOF: nothing of it may reach the server either. */
	p = px_new(spec);
	fd = px_connect(p, &t);
	send_str(fd, req);
	read_n(fd, buf, strlen("HTTP/1.1 200 Connection established\r\n\r\n"));
	assert_int_equal(write(fd, rec, 30), 30);
	shutdown(fd, SHUT_WR);
	assert_int_equal(read_all(fd, buf, sizeof(buf)), 0);
	px_join(&t, fd);
	assert_int_equal(p->last.verdict, LG_EGRESS_DENIED);
	assert_non_null(strstr(p->last.reason, "middle of a TLS ClientHello"));
	assert_int_equal(srv_conns(s, 2), 2);
	pthread_mutex_lock(&s->mu);
	assert_int_equal(s->got_len, 0);
	pthread_mutex_unlock(&s->mu);
	px_free(p);

	if (!localhost_resolves()) {
		srv_stop(s);
		return;
	}
	/* A matching SNI passes, with the hello sent along with the CONNECT. */
	free(spec);
	spec = xasprintf("localhost:%u, 127.0.0.1:%u", s->port, s->port);
	p = px_new(spec);
	hn = build_handshake(hs, "LOCALHOST.", 1);
	rn = build_records(rec, hs, hn, 16384);
	fd = px_connect(p, &t);
	free(req);
	req = xasprintf("CONNECT localhost:%u HTTP/1.1\r\n\r\n", s->port);
	{
		size_t rl = strlen(req);
		uint8_t *both = xmalloc(rl + rn);

		memcpy(both, req, rl);
		memcpy(both + rl, rec, rn);
		assert_int_equal(write(fd, both, rl + rn), (ssize_t)(rl + rn));
		free(both);
	}
	read_n(fd, buf, strlen("HTTP/1.1 200 Connection established\r\n\r\n"));
	assert_string_equal(buf, "HTTP/1.1 200 Connection established\r\n\r\n");
	read_n(fd, buf, rn);
	assert_memory_equal(buf, rec, rn);
	px_join(&t, fd);
	assert_int_equal(p->last.verdict, LG_EGRESS_ALLOWED);
	assert_int_equal(p->last.up, rn);
	px_free(p);
	srv_stop(s);
}

static void test_malformed_and_failures(void **state)
{
	struct px *p = px_new("127.0.0.1:*");
	char buf[2048];
	int lfd, port;
	cleanup_free char *req = NULL;

	one_request(p, "GET http://127.0.0.1/ HTTP/1.1\r\nHost: evil.example\r\n\r\n", buf,
		    sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 400 Bad Request\r\n"));
	assert_non_null(strstr(buf, "luminaguard: bad proxy request: Host header does not match"));
	assert_int_equal(p->last.verdict, LG_EGRESS_FAILED);

	one_request(p, "GET http://127.0.0.1/ HTTP/1.1\nHost: x\n\n", buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 400 Bad Request\r\n"));
	assert_non_null(strstr(buf, "bare LF"));

	one_request(p, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 400 Bad Request\r\n"));
	assert_non_null(strstr(buf, "not a proxy request"));

	/* Oversized head. */
	{
		struct conn_thread t;
		int fd = px_connect(p, &t);
		char *junk = xmalloc(LG_HTTP_MAX_HEAD);

		memset(junk, 'a', LG_HTTP_MAX_HEAD);
		memcpy(junk, "GET http://127.0.0.1/ HTTP/1.1\r\nX: ", 35);
		assert_int_equal(write(fd, junk, LG_HTTP_MAX_HEAD), LG_HTTP_MAX_HEAD);
		free(junk);
		read_all(fd, buf, sizeof(buf));
		assert_non_null(strstr(buf, "HTTP/1.1 400 Bad Request\r\n"));
		assert_non_null(strstr(buf, "too large"));
		px_join(&t, fd);
	}

	/* A head that never completes: 408 after head_timeout_ms. */
	{
		struct conn_thread t;
		uint64_t t0 = lg_now_ms();
		int fd;

		p->eg.head_timeout_ms = 300;
		fd = px_connect(p, &t);
		send_str(fd, "GET http://127.0.0.1/ HTTP/1.1\r\n");
		read_all(fd, buf, sizeof(buf));
		assert_non_null(strstr(buf, "HTTP/1.1 408 Request Timeout\r\n"));
		assert_true(lg_now_ms() - t0 >= 300);
		px_join(&t, fd);
		p->eg.head_timeout_ms = 2000;
	}

	/* Nobody listening: 502 with the reason. */
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	{
		struct sockaddr_in a = {.sin_family = AF_INET,
					.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		socklen_t al = sizeof(a);

		assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
		assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &al), 0);
		port = ntohs(a.sin_port);
	}
	req = xasprintf("CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n", port);
	one_request(p, req, buf, sizeof(buf));
	close(lfd);
	assert_non_null(strstr(buf, "HTTP/1.1 502 Bad Gateway\r\n"));
	assert_non_null(strstr(buf, "Connection refused"));
	assert_int_equal(p->last.verdict, LG_EGRESS_FAILED);
	assert_string_equal(p->last.address, "127.0.0.1");

	/* A name that does not resolve. */
	px_free(p);
	p = px_new("*.lg-test.invalid");
	one_request(p, "CONNECT nothing.lg-test.invalid:443 HTTP/1.1\r\n\r\n", buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 502 Bad Gateway\r\n"));
	assert_non_null(strstr(buf, "cannot resolve nothing.lg-test.invalid"));

	/* The client goes away before a whole head: one event, no answer. */
	{
		struct conn_thread t;
		int fd = px_connect(p, &t);
		int before = p->nlog;

		send_str(fd, "CONNECT a");
		px_join(&t, fd);
		assert_int_equal(p->nlog, before + 1);
		assert_int_equal(p->last.verdict, LG_EGRESS_FAILED);
	}
	px_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_allowlist_bad_entries),
	    cmocka_unit_test(test_allowlist_names),
	    cmocka_unit_test(test_allowlist_addresses),
	    cmocka_unit_test(test_allowlist_has_addresses),
	    cmocka_unit_test(test_addr_forbidden),
	    cmocka_unit_test(test_parse_connect),
	    cmocka_unit_test(test_parse_forward),
	    cmocka_unit_test(test_parse_malformed),
	    cmocka_unit_test(test_parse_partial_and_bounds),
	    cmocka_unit_test(test_forward_head),
	    cmocka_unit_test(test_body_framing),
	    cmocka_unit_test(test_tls_sni),
	    cmocka_unit_test(test_connect_tunnel),
	    cmocka_unit_test(test_connect_server_speaks_first),
	    cmocka_unit_test(test_forward_get),
	    cmocka_unit_test(test_forward_body_then_pipelined),
	    cmocka_unit_test(test_localhost_by_name_refused),
	    cmocka_unit_test(test_not_allowed),
	    cmocka_unit_test(test_ask),
	    cmocka_unit_test(test_approval_never_opens_host),
	    cmocka_unit_test(test_dest_note),
	    cmocka_unit_test(test_sni),
	    cmocka_unit_test(test_malformed_and_failures),
	    cmocka_unit_test(test_host_own_address),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
