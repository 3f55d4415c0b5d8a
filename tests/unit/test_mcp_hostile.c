/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The MCP core against a hostile client: raw JSON-RPC lines handed to
 * mcp_session_handle_text(), no SDK in between, so the client can say what
 * no well-behaved one would.  The red action is sandbox_destroy of a sandbox
 * that does not exist (the default policy makes it red; no VM boots): it
 * waits for a human, and the tests check what can and cannot decide it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "approval/approval.h"
#include "common/log.h"
#include "common/util.h"
#include "mcp/mcp.h"
#include "policy/policy.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Long enough that a test which waits it out fails on its clock. */
#define APPROVAL_TIMEOUT_S 30
/* What "promptly" means here: well under the approval timeout. */
#define PROMPT_MS 5000

static struct policy *g_policy;
static struct approval_broker *g_broker;
static struct mcp_server *g_srv;

/* ---- a client that is only what it sends and what it received ---- */

struct client {
	struct mcp_session *ss;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	json_t *inbox; /* every message the server sent, in order */
};

static int capture(void *transport, void *stream, const char *json)
{
	struct client *c = transport;
	json_t *m = json_loads(json, 0, NULL);

	if (m == NULL)
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	json_array_append_new(c->inbox, m);
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	return 0;
}

static void say(struct client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void say(struct client *c, const char *fmt, ...)
{
	va_list ap;
	char *text;

	va_start(ap, fmt);
	assert_true(vasprintf(&text, fmt, ap) >= 0);
	va_end(ap);
	mcp_session_handle_text(c->ss, text, strlen(text), NULL);
	free(text);
}

/* The first message that has `key` equal to `value` (compact JSON); taken out of the inbox. */
static json_t *take(struct client *c, const char *key, const char *value, unsigned ms)
{
	uint64_t end = lg_now_ms() + ms;
	json_t *found = NULL;

	pthread_mutex_lock(&c->lock);
	for (;;) {
		size_t i;
		json_t *m;
		json_array_foreach(c->inbox, i, m)
		{
			char *v =
			    json_dumps(json_object_get(m, key), JSON_COMPACT | JSON_ENCODE_ANY);
			bool hit = v != NULL && strcmp(v, value) == 0;
			free(v);
			if (hit) {
				found = json_incref(m);
				json_array_remove(c->inbox, i);
				break;
			}
		}
		if (found != NULL || lg_now_ms() >= end)
			break;
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 50 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&c->cond, &c->lock, &ts);
	}
	pthread_mutex_unlock(&c->lock);
	return found;
}

static struct client *client_open(bool elicitation, const char *name)
{
	struct client *c = xzalloc(sizeof(*c));
	json_t *r;

	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	c->inbox = json_array();
	c->ss = mcp_session_new(g_srv, capture, c);
	say(c,
	    "{\"jsonrpc\":\"2.0\",\"id\":\"init\",\"method\":\"initialize\",\"params\":{"
	    "\"protocolVersion\":\"2025-06-18\",\"capabilities\":%s,\"clientInfo\":{\"name\":%s}}}",
	    elicitation ? "{\"elicitation\":{}}" : "{}", name);
	r = take(c, "id", "\"init\"", 1000);
	assert_non_null(r);
	assert_non_null(json_object_get(r, "result"));
	json_decref(r);
	say(c, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}");
	return c;
}

/* Closes the session; returns how long that took, in ms. */
static uint64_t client_close(struct client *c)
{
	uint64_t t0 = lg_now_ms();

	mcp_session_close(c->ss);
	t0 = lg_now_ms() - t0;
	json_decref(c->inbox);
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->cond);
	free(c);
	return t0;
}

/* A red call: sandbox_destroy of a sandbox nobody has. */
static void red_call(struct client *c, int id)
{
	say(c,
	    "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"tools/call\",\"params\":{\"name\":"
	    "\"sandbox_destroy\",\"arguments\":{\"sandbox_id\":\"sb-000000000000\"}}}",
	    id);
}

static size_t pending(void)
{
	json_t *p = approval_list_pending(g_broker);
	size_t n = json_array_size(p);

	json_decref(p);
	return n;
}

/* Waits up to ms for exactly n approvals to be pending. */
static void wait_pending(size_t n, unsigned ms)
{
	uint64_t end = lg_now_ms() + ms;

	while (pending() != n) {
		if (lg_now_ms() >= end)
			fail_msg("%zu approvals pending, expected %zu", pending(), n);
		usleep(10 * 1000);
	}
}

/* The id of the elicitation/create c received, as compact JSON (new string). */
static char *elicitation_id(struct client *c)
{
	json_t *m = take(c, "method", "\"elicitation/create\"", 5000);
	char *id;

	assert_non_null(m);
	id = json_dumps(json_object_get(m, "id"), JSON_COMPACT | JSON_ENCODE_ANY);
	json_decref(m);
	return id;
}

#define ACCEPT "\"result\":{\"action\":\"accept\",\"content\":{\"approve\":true}}"

/* ---- stderr, to see what the server logged ---- */

static int saved_stderr = -1;
static FILE *log_file;

static void log_capture_start(void)
{
	log_file = tmpfile();
	assert_non_null(log_file);
	fflush(stderr);
	saved_stderr = dup(2);
	assert_true(dup2(fileno(log_file), 2) == 2);
}

/* Everything logged since log_capture_start (new string). */
static char *log_capture_end(void)
{
	long n;
	char *text;

	fflush(stderr);
	dup2(saved_stderr, 2);
	close(saved_stderr);
	n = ftell(log_file);
	text = xzalloc((size_t)(n > 0 ? n : 0) + 1);
	rewind(log_file);
	if (n > 0 && fread(text, 1, (size_t)n, log_file) != (size_t)n)
		fail_msg("cannot read the captured log");
	fclose(log_file);
	fputs(text, stderr); /* still shown with the test's output */
	return text;
}

/* ---- tests ---- */

/*
 * A client that never declared elicitation is never asked, so nothing it
 * sends can be an answer: not the small integers an old server used as ids,
 * not strings that look like ours.  The approval stays pending, and the
 * forgeries are logged.
 */
static void test_forged_response_decides_nothing(void **state)
{
	struct client *c = client_open(false, "\"forger\"");
	static const char *const ids[] = {"0", "1", "2", "3", "-1", "\"1\"", "\"el-1\"", "null"};
	char *log;

	red_call(c, 7);
	wait_pending(1, 5000);
	log_capture_start();
	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
		say(c, "{\"jsonrpc\":\"2.0\",\"id\":%s," ACCEPT "}", ids[i]);
	log = log_capture_end();
	/* Handled synchronously: a forged yes would have decided by now. */
	assert_int_equal(pending(), 1);
	assert_null(take(c, "id", "7", 300));
	assert_null(take(c, "method", "\"elicitation/create\"", 0));
	assert_non_null(strstr(log, "dropped a response"));
	free(log);
	assert_true(client_close(c) < PROMPT_MS);
	assert_int_equal(pending(), 0);
}

/*
 * Outgoing ids are unguessable and belong to one session: another session
 * cannot answer them, even knowing them, and two sessions never share one.
 */
static void test_ids_are_per_session(void **state)
{
	struct client *a = client_open(true, "\"a\"");
	struct client *b = client_open(true, "\"b\"");
	char *ida, *idb;
	json_t *r;

	red_call(a, 1);
	ida = elicitation_id(a);
	red_call(b, 1);
	idb = elicitation_id(b);
	wait_pending(2, 5000);
	/* A string with 128 random bits: no counter to guess. */
	assert_true(ida[0] == '"' && strlen(ida) >= 34);
	assert_string_not_equal(ida, idb);

	say(b, "{\"jsonrpc\":\"2.0\",\"id\":%s," ACCEPT "}", ida);
	say(a, "{\"jsonrpc\":\"2.0\",\"id\":%s," ACCEPT "}", idb);
	assert_int_equal(pending(), 2);

	/* Its own session's answer is the one that counts. */
	say(a, "{\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":{\"action\":\"decline\"}}", ida);
	r = take(a, "id", "1", 5000);
	assert_non_null(r);
	assert_true(json_is_true(json_object_get(json_object_get(r, "result"), "isError")));
	json_decref(r);
	assert_int_equal(pending(), 1);
	assert_true(client_close(b) < PROMPT_MS);
	assert_true(client_close(a) < PROMPT_MS);
	assert_int_equal(pending(), 0);
	free(ida);
	free(idb);
}

/*
 * An error answer ("cannot ask my user") leaves the approval to other
 * channels, and still reachable: the request is answered once (a yes
 * replayed after it counts for nothing), and closing the session ends the
 * wait at once instead of after the approval timeout.
 */
static void test_error_answer_then_close(void **state)
{
	struct client *c = client_open(true, "\"err\"");
	char *id;

	red_call(c, 3);
	id = elicitation_id(c);
	wait_pending(1, 5000);
	say(c, "{\"jsonrpc\":\"2.0\",\"id\":%s,\"error\":{\"code\":-1,\"message\":\"no UI\"}}", id);
	assert_int_equal(pending(), 1);
	say(c, "{\"jsonrpc\":\"2.0\",\"id\":%s," ACCEPT "}", id);
	assert_int_equal(pending(), 1);
	assert_true(client_close(c) < PROMPT_MS);
	assert_int_equal(pending(), 0);
	free(id);
}

/* The same, and the client cancels the call: nobody can approve it afterwards. */
static void test_error_answer_then_cancel(void **state)
{
	struct client *c = client_open(true, "\"err\"");
	char *id;

	red_call(c, 4);
	id = elicitation_id(c);
	wait_pending(1, 5000);
	say(c, "{\"jsonrpc\":\"2.0\",\"id\":%s,\"error\":{\"code\":-1,\"message\":\"no UI\"}}", id);
	say(c, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{"
	       "\"requestId\":4}}");
	wait_pending(0, PROMPT_MS);
	/* A cancelled call gets no response. */
	assert_null(take(c, "id", "4", 300));
	assert_true(client_close(c) < PROMPT_MS);
	free(id);
}

/*
 * A second initialize while a call reads what the first one negotiated:
 * under ThreadSanitizer (build-tsan) this is where unlocked reads of the
 * session's protocol and elicitation flag show up.
 */
static void test_reinitialize_during_call(void **state)
{
	struct client *c = client_open(true, "\"again\"");
	json_t *r;

	for (int i = 0; i < 4; i++) {
		red_call(c, 20 + i);
		say(c,
		    "{\"jsonrpc\":\"2.0\",\"id\":\"re\",\"method\":\"initialize\",\"params\":{"
		    "\"protocolVersion\":\"%s\",\"capabilities\":%s}}",
		    i % 2 ? "2025-06-18" : "2025-03-26", i % 2 ? "{\"elicitation\":{}}" : "{}");
		r = take(c, "id", "\"re\"", 1000);
		assert_non_null(r);
		json_decref(r);
		assert_non_null(mcp_session_protocol(c->ss));
	}
	wait_pending(4, 5000);
	assert_true(client_close(c) < PROMPT_MS);
	assert_int_equal(pending(), 0);
}

/* The decider of an elicitation is the client's own report, and says so. */
static void test_decider_is_client_report(void **state)
{
	struct client *c = client_open(true, "\"ev\\u0007il (admin)\"");
	const char *text;
	char *id;
	json_t *r;

	red_call(c, 5);
	id = elicitation_id(c);
	say(c,
	    "{\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":{\"action\":\"accept\",\"content\":{"
	    "\"approve\":false,\"reason\":\"no\"}}}",
	    id);
	r = take(c, "id", "5", 5000);
	assert_non_null(r);
	text = json_string_value(json_object_get(
	    json_array_get(json_object_get(json_object_get(r, "result"), "content"), 0), "text"));
	assert_non_null(text);
	assert_non_null(strstr(text, "denied by elicitation (client-reported: ev?il ?admin?): no"));
	json_decref(r);
	assert_true(client_close(c) < PROMPT_MS);
	free(id);
}

/*
 * Without a working getrandom there are no unguessable ids, and no
 * time-derived ones either: making a session aborts.  In a child with a
 * seccomp filter that makes getrandom fail.
 */
static void test_no_random_no_session(void **state)
{
	int status;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct sock_filter f[] = {
		    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getrandom, 0, 1),
		    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
		    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		};
		struct sock_fprog prog = {.len = sizeof(f) / sizeof(f[0]), .filter = f};
		struct client c = {0};

		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
		    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
			_exit(3);
		signal(SIGABRT, SIG_DFL);
		mcp_session_new(g_srv, capture, &c);
		_exit(0); /* made a session with ids that are not random */
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 3)
		skip(); /* no seccomp here */
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGABRT);
}

static int group_setup(void **state)
{
	struct mcp_server_opts so = {0};
	struct lg_err *err = NULL;

	g_policy = policy_default();
	g_broker = approval_broker_new(APPROVAL_TIMEOUT_S, NULL);
	so.policy = g_policy;
	so.broker = g_broker;
	if (mcp_server_new(&so, &g_srv, &err) < 0)
		fail_msg("mcp_server_new: %s", err->msg);
	return 0;
}

static int group_teardown(void **state)
{
	mcp_server_free(g_srv);
	approval_broker_free(g_broker);
	policy_free(g_policy);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_forged_response_decides_nothing),
	    cmocka_unit_test(test_ids_are_per_session),
	    cmocka_unit_test(test_error_answer_then_close),
	    cmocka_unit_test(test_error_answer_then_cancel),
	    cmocka_unit_test(test_reinitialize_during_call),
	    cmocka_unit_test(test_decider_is_client_report),
	    cmocka_unit_test(test_no_random_no_session),
	};

	lg_log_init();
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
