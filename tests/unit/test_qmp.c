/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of the QMP client against a scripted fake QEMU on a socketpair. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "hv/qmp.h"

#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void test_parse_kinds(void **state)
{
	struct qmp_msg m;
	struct lg_err *err = NULL;
	const char *greet = "{\"QMP\": {\"version\": {}, \"capabilities\": []}}";
	const char *ret = "{\"return\": {}}";
	const char *ev = "{\"timestamp\": {}, \"event\": \"SHUTDOWN\", \"data\": {}}";
	const char *er = "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"nope\"}}";

	assert_int_equal(qmp_parse_line(greet, strlen(greet), &m, &err), 0);
	assert_int_equal(m.kind, QMP_GREETING);
	qmp_msg_clear(&m);
	assert_int_equal(qmp_parse_line(ret, strlen(ret), &m, &err), 0);
	assert_int_equal(m.kind, QMP_RETURN);
	qmp_msg_clear(&m);
	assert_int_equal(qmp_parse_line(ev, strlen(ev), &m, &err), 0);
	assert_int_equal(m.kind, QMP_EVENT);
	assert_string_equal(m.event, "SHUTDOWN");
	qmp_msg_clear(&m);
	assert_int_equal(qmp_parse_line(er, strlen(er), &m, &err), 0);
	assert_int_equal(m.kind, QMP_ERROR);
	assert_string_equal(m.err_class, "CommandNotFound");
	assert_string_equal(m.err_desc, "nope");
	qmp_msg_clear(&m);
}

static void test_parse_bad(void **state)
{
	static const char *const bad[] = {
	    "",
	    "{",
	    "[]",
	    "42",
	    "{\"what\": 1}",
	    "{\"event\": 5}",
	    "{\"a\":1,\"a\":2}",
	    "{\"return\": {}} trailing",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct qmp_msg m;
		struct lg_err *err = NULL;
		assert_true(qmp_parse_line(bad[i], strlen(bad[i]), &m, &err) < 0);
		assert_non_null(err);
		lg_err_free(&err);
		assert_null(m.json);
	}
}

struct fake {
	int fd;
	const char *script; /* what the fake QEMU sends, in order, after each request */
};

/* Greets, then answers each request line with the next script line(s). */
static void *fake_qemu(void *arg)
{
	struct fake *f = arg;
	const char *greeting = "{\"QMP\": {\"version\": {}, \"capabilities\": [\"oob\"]}}\r\n";
	char buf[4096];
	const char *p = f->script;

	if (write(f->fd, greeting, strlen(greeting)) < 0)
		return NULL;
	for (;;) {
		ssize_t n = read(f->fd, buf, sizeof(buf));
		if (n <= 0)
			break;
		const char *end = strstr(p, "|");
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (len == 0)
			break;
		if (write(f->fd, p, len) < 0)
			break;
		p += len + (end ? 1 : 0);
	}
	close(f->fd);
	return NULL;
}

static void test_client_session(void **state)
{
	int sv[2];
	pthread_t t;
	struct qmp q;
	struct lg_err *err = NULL;
	json_t *ret = NULL;
	struct fake f;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	f.fd = sv[1];
	/* capabilities ok; query-status has an event before its reply; then an error. */
	f.script = "{\"return\": {}}\r\n|"
		   "{\"event\": \"SHUTDOWN\", \"data\": {}}\r\n{\"return\": {\"status\": "
		   "\"running\"}}\r\n|"
		   "{\"error\": {\"class\": \"GenericError\", \"desc\": \"boom\"}}\r\n|";
	pthread_create(&t, NULL, fake_qemu, &f);
	assert_int_equal(qmp_open(&q, sv[0], 2000, &err), 0);
	assert_int_equal(qmp_execute(&q, "query-status", NULL, &ret, 2000, &err), 0);
	assert_string_equal(json_string_value(json_object_get(ret, "status")), "running");
	assert_true(q.shutdown_seen);
	json_decref(ret);
	assert_true(qmp_execute(&q, "bad", NULL, NULL, 2000, &err) < 0);
	assert_non_null(strstr(err->msg, "boom"));
	lg_err_free(&err);
	/* the fake hangs up: a clean error, not a hang */
	assert_true(qmp_execute(&q, "quit", NULL, NULL, 2000, &err) < 0);
	lg_err_free(&err);
	qmp_close(&q);
	pthread_join(t, NULL);
}

static void test_client_timeout(void **state)
{
	int sv[2];
	struct qmp q;
	struct lg_err *err = NULL;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	/* silent peer: no greeting */
	assert_true(qmp_open(&q, sv[0], 200, &err) < 0);
	assert_non_null(strstr(err->msg, "no reply"));
	lg_err_free(&err);
	close(sv[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_kinds),
	    cmocka_unit_test(test_parse_bad),
	    cmocka_unit_test(test_client_session),
	    cmocka_unit_test(test_client_timeout),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
