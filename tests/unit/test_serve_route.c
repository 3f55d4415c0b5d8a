/* SPDX-License-Identifier: Apache-2.0 */
/* The serve API's request-line parsers (src/serve/route.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "serve/route.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

static void test_routes(void **state)
{
	static const struct {
		const char *path;
		enum lg_route route;
		const char *id;
	} cases[] = {
	    {"/healthz", LG_ROUTE_HEALTHZ, ""},
	    {"/metrics", LG_ROUTE_METRICS, ""},
	    {"/v1/sandboxes", LG_ROUTE_SANDBOXES, ""},
	    {"/v1/sandboxes/sb-0123456789ab", LG_ROUTE_SANDBOX, "sb-0123456789ab"},
	    {"/v1/sandboxes/sb-0123456789ab/exec", LG_ROUTE_EXEC, "sb-0123456789ab"},
	    {"/v1/sandboxes/sb-0123456789ab/files", LG_ROUTE_FILES, "sb-0123456789ab"},
	    {"/v1/approvals", LG_ROUTE_APPROVALS, ""},
	    {"/v1/approvals/ap-0123456789ab", LG_ROUTE_APPROVAL, "ap-0123456789ab"},
	    /* Strict: no trailing slash, no extra segment, no prefix match. */
	    {"/healthz/", LG_ROUTE_NONE, ""},
	    {"/v1/sandboxes/", LG_ROUTE_NONE, ""},
	    {"/v1/sandboxesx", LG_ROUTE_NONE, ""},
	    {"/v1/sandboxes/x/exec/", LG_ROUTE_NONE, ""},
	    {"/v1/sandboxes/x/run", LG_ROUTE_NONE, ""},
	    {"/v1/approvals/x/y", LG_ROUTE_NONE, ""},
	    {"/v2/sandboxes", LG_ROUTE_NONE, ""},
	    {"", LG_ROUTE_NONE, ""},
	    /* Ids: [A-Za-z0-9._-]{1,64}, never . or .. */
	    {"/v1/sandboxes/../exec", LG_ROUTE_NONE, ""},
	    {"/v1/sandboxes/./files", LG_ROUTE_NONE, ""},
	    {"/v1/sandboxes/a b", LG_ROUTE_NONE, ""},
	    {"/v1/sandboxes/a%2Fb", LG_ROUTE_NONE, ""},
	    {"/v1/sandboxes//exec", LG_ROUTE_NONE, ""},
	    {"/v1/sandboxes/...", LG_ROUTE_SANDBOX, "..."},
	    {"/v1/sandboxes/"
	     "0123456789012345678901234567890123456789012345678901234567890123",
	     LG_ROUTE_SANDBOX, "0123456789012345678901234567890123456789012345678901234567890123"},
	    {"/v1/sandboxes/"
	     "01234567890123456789012345678901234567890123456789012345678901234",
	     LG_ROUTE_NONE, ""},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct lg_route_match m;

		assert_int_equal(lg_route_parse(cases[i].path, &m), cases[i].route);
		assert_int_equal(m.route, cases[i].route);
		assert_string_equal(m.id, cases[i].id);
	}
	struct lg_route_match m;
	assert_int_equal(lg_route_parse(NULL, &m), LG_ROUTE_NONE);
}

static void test_methods(void **state)
{
	assert_int_equal(lg_route_method("GET"), LG_METHOD_GET);
	assert_int_equal(lg_route_method("DELETE"), LG_METHOD_DELETE);
	assert_int_equal(lg_route_method("get"), 0);
	assert_int_equal(lg_route_method("PATCH"), 0);
	assert_int_equal(lg_route_method(NULL), 0);
	assert_int_equal(lg_route_methods(LG_ROUTE_NONE), 0);
	assert_int_equal(lg_route_methods(LG_ROUTE_EXEC), LG_METHOD_POST);
	assert_int_equal(lg_route_methods(LG_ROUTE_FILES), LG_METHOD_GET | LG_METHOD_PUT);
	assert_int_equal(lg_route_methods(LG_ROUTE_SANDBOX), LG_METHOD_GET | LG_METHOD_DELETE);
	assert_string_equal(lg_route_allow(LG_ROUTE_SANDBOXES), "GET, POST");
	assert_string_equal(lg_route_allow(LG_ROUTE_APPROVAL), "GET, POST");
}

static void test_request_id(void **state)
{
	char long_id[70];

	assert_true(lg_request_id_ok("abc-DEF_1.2"));
	assert_true(lg_request_id_ok("0"));
	assert_false(lg_request_id_ok(""));
	assert_false(lg_request_id_ok(NULL));
	assert_false(lg_request_id_ok("a b"));
	assert_false(lg_request_id_ok("a\nb"));
	assert_false(lg_request_id_ok("a\"b"));
	memset(long_id, 'a', 64);
	long_id[64] = '\0';
	assert_true(lg_request_id_ok(long_id));
	long_id[64] = 'a';
	long_id[65] = '\0';
	assert_false(lg_request_id_ok(long_id));
}

static void test_mode_and_flag(void **state)
{
	uint32_t mode = 1;
	bool f = false;

	assert_int_equal(lg_route_parse_mode("0644", &mode), 0);
	assert_int_equal(mode, 0644);
	assert_int_equal(lg_route_parse_mode("7777", &mode), 0);
	assert_int_equal(mode, 07777);
	assert_int_equal(lg_route_parse_mode("0", &mode), 0);
	assert_int_equal(mode, 0);
	assert_int_equal(lg_route_parse_mode("10000", &mode), -EINVAL);
	assert_int_equal(lg_route_parse_mode("0648", &mode), -EINVAL);
	assert_int_equal(lg_route_parse_mode("", &mode), -EINVAL);
	assert_int_equal(lg_route_parse_mode("000644", &mode), -EINVAL);
	assert_int_equal(lg_route_parse_mode("-1", &mode), -EINVAL);
	assert_int_equal(lg_route_parse_flag("1", &f), 0);
	assert_true(f);
	assert_int_equal(lg_route_parse_flag("false", &f), 0);
	assert_false(f);
	assert_int_equal(lg_route_parse_flag("yes", &f), -EINVAL);
	assert_int_equal(lg_route_parse_flag("", &f), -EINVAL);
}

static void test_bind(void **state)
{
	struct sockaddr_storage sa;
	socklen_t len;
	char host[64];

	assert_int_equal(lg_route_parse_bind("127.0.0.1:8080", &sa, &len, host, sizeof(host)), 0);
	assert_int_equal(sa.ss_family, AF_INET);
	assert_int_equal(ntohs(((struct sockaddr_in *)&sa)->sin_port), 8080);
	assert_string_equal(host, "127.0.0.1");
	assert_true(lg_route_bind_loopback(&sa));

	assert_int_equal(lg_route_parse_bind("localhost:0", &sa, &len, host, sizeof(host)), 0);
	assert_string_equal(host, "localhost");
	assert_true(lg_route_bind_loopback(&sa));

	assert_int_equal(lg_route_parse_bind("[::1]:9", &sa, &len, host, sizeof(host)), 0);
	assert_int_equal(sa.ss_family, AF_INET6);
	assert_string_equal(host, "[::1]");
	assert_true(lg_route_bind_loopback(&sa));

	assert_int_equal(lg_route_parse_bind("0.0.0.0:80", &sa, &len, host, sizeof(host)), 0);
	assert_false(lg_route_bind_loopback(&sa));
	assert_int_equal(lg_route_parse_bind("[::]:80", &sa, &len, host, sizeof(host)), 0);
	assert_false(lg_route_bind_loopback(&sa));
	assert_int_equal(lg_route_parse_bind("10.1.2.3:80", &sa, &len, host, sizeof(host)), 0);
	assert_false(lg_route_bind_loopback(&sa));

	static const char *const bad[] = {
	    "",		  "8080",	  "127.0.0.1",	   "127.0.0.1:", ":80",
	    "::1:80",	  "[::1]80",	  "[::1]:",	   "host:80",	 "1.2.3.4:65536",
	    "1.2.3.4:8x", "[1.2.3.4]:80", "1.2.3.4:123456"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(lg_route_parse_bind(bad[i], &sa, &len, host, sizeof(host)),
				 -EINVAL);
	assert_int_equal(lg_route_parse_bind(NULL, &sa, &len, host, sizeof(host)), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_routes),     cmocka_unit_test(test_methods),
	    cmocka_unit_test(test_request_id), cmocka_unit_test(test_mode_and_flag),
	    cmocka_unit_test(test_bind),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
