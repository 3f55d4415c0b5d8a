/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the approval step (approval/gate.c): classify, audit the
 * request and outcome, ask every asker, the first answer wins, a timeout
 * is a no, relative paths and an unwritable audit log refuse, the card
 * cuts what does not fit.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "approval/gate.h"
#include "audit/audit.h"
#include "common/metrics.h"
#include "common/util.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* A command containing "danger" is red; the rest of sandbox_exec green; file writes red. */
static const char policy_text[] =
    "{\"version\": 1, \"rules\": ["
    "{\"name\": \"danger\", \"tool\": \"sandbox_exec\", \"match\": {\"command\": "
    "{\"regex\": \"danger\"}}, \"verdict\": \"red\", \"risk\": \"high\", \"reason\": \"test "
    "rule\"},"
    "{\"name\": \"exec\", \"tool\": \"sandbox_exec\", \"verdict\": \"green\", \"risk\": "
    "\"low\", \"reason\": \"in the VM\"},"
    "{\"name\": \"write\", \"tool\": \"sandbox_fs_write\", \"verdict\": \"red\", \"risk\": "
    "\"medium\", \"reason\": \"writes\"}]}";

struct fixture {
	char *dir, *log_path;
	struct policy *policy;
	struct audit_log *log;
	struct approval_broker *broker;
	struct lg_metrics *metrics;
	struct lg_gate g;
};

static int setup(void **state)
{
	char tmpl[] = "/tmp/lg-test-gate-XXXXXX";
	struct fixture *f = xzalloc(sizeof(*f));
	struct lg_err *err = NULL;
	struct lg_metric_desc d = {.kind = LG_METRIC_COUNTER,
				   .name = "luminaguard_approvals_total",
				   .help = "approvals by outcome",
				   .labels = {"outcome"},
				   .nlabels = 1};

	assert_non_null(mkdtemp(tmpl));
	f->dir = xstrdup(tmpl);
	f->log_path = xasprintf("%s/audit.jsonl", f->dir);
	assert_int_equal(policy_parse(policy_text, strlen(policy_text), &f->policy, &err), 0);
	assert_int_equal(audit_open(f->log_path, &f->log, &err), 0);
	f->broker = approval_broker_new(1, f->log);
	f->metrics = lg_metrics_new();
	f->g.policy = f->policy;
	f->g.audit = f->log;
	f->g.broker = f->broker;
	assert_int_equal(lg_metrics_register(f->metrics, &d, &f->g.approvals, &err), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	cleanup_free char *cmd = xasprintf("rm -rf '%s'", f->dir);

	approval_broker_free(f->broker);
	audit_close(f->log);
	policy_free(f->policy);
	lg_metrics_free(f->metrics);
	assert_int_equal(system(cmd), 0);
	free(f->log_path);
	free(f->dir);
	free(f);
	return 0;
}

/* The log's entries, in order, after checking its chain. */
static json_t *log_entries(struct fixture *f)
{
	json_t *arr = json_array();
	struct lg_err *err = NULL;
	size_t n;
	FILE *fp;
	char *line = NULL;
	size_t cap = 0;

	assert_int_equal(audit_verify(f->log_path, &n, &err), 0);
	fp = fopen(f->log_path, "r");
	assert_non_null(fp);
	while (getline(&line, &cap, fp) > 0) {
		json_t *e = json_loads(line, 0, NULL);
		assert_non_null(e);
		json_array_append_new(arr, e);
	}
	free(line);
	fclose(fp);
	assert_int_equal(json_array_size(arr), n);
	return arr;
}

/* The last entry of the given type, or NULL. */
static json_t *last_of(json_t *entries, const char *type)
{
	json_t *found = NULL, *e;
	size_t i;

	json_array_foreach(entries, i, e)
	{
		if (strcmp(json_string_value(json_object_get(e, "type")), type) == 0)
			found = e;
	}
	return found;
}

static double approvals_count(struct fixture *f, const char *state)
{
	return lg_metric_value(lg_metric_child(f->g.approvals, (const char *const[]){state}));
}

/* ---- a scripted asker ---- */

enum how { ASK_APPROVE, ASK_DENY, ASK_SILENT, ASK_LATER_APPROVE, ASK_LATER_DENY };

struct script {
	enum how how;
	unsigned delay_ms;
	int asked, forgotten;
	int decide_ret; /* what approval_decide_ref said, for the later ones */
	json_t *card;	/* the card it was shown */
	pthread_t thread;
	bool started;
	struct approval *a;
};

static void *later(void *arg)
{
	struct script *s = arg;

	usleep(s->delay_ms * 1000u);
	s->decide_ret =
	    approval_decide_ref(s->a, s->how == ASK_LATER_APPROVE, APPROVAL_CH_TTY, "later", NULL);
	return NULL;
}

static void *script_ask(void *ctx, struct approval *a, const json_t *card)
{
	struct script *s = ctx;

	s->asked++;
	s->card = json_deep_copy(card);
	switch (s->how) {
	case ASK_APPROVE:
		s->decide_ret = approval_decide_ref(a, true, APPROVAL_CH_TTY, "tester", NULL);
		break;
	case ASK_DENY:
		s->decide_ret = approval_decide_ref(a, false, APPROVAL_CH_TTY, "tester", "no way");
		break;
	case ASK_SILENT:
		break;
	case ASK_LATER_APPROVE:
	case ASK_LATER_DENY:
		s->a = a;
		assert_int_equal(pthread_create(&s->thread, NULL, later, s), 0);
		s->started = true;
		break;
	}
	return s;
}

static void script_forget(void *ctx, void *token)
{
	struct script *s = ctx;

	assert_ptr_equal(token, s);
	if (s->started)
		pthread_join(s->thread, NULL);
	s->forgotten++;
}

static const struct lg_asker_ops script_ops = {.ask = script_ask, .forget = script_forget};

static bool enter(struct fixture *f, const char *tool, json_t *args, struct script *s, size_t n,
		  char **denial)
{
	struct lg_asker askers[2];
	bool ok;

	for (size_t i = 0; i < n; i++)
		askers[i] = (struct lg_asker){.ops = &script_ops, .ctx = &s[i]};
	ok = lg_gate_enter(&f->g,
			   &(struct lg_gate_req){.who = "test",
						 .tool = tool,
						 .args = args,
						 .request_id = "req-1",
						 .askers = askers,
						 .n_askers = n},
			   denial);
	json_decref(args);
	return ok;
}

/* ---- the tests ---- */

static void test_green(void **state)
{
	struct fixture *f = *state;
	struct script s = {.how = ASK_DENY};
	char *denial = NULL;
	json_t *args = json_pack("{s:s, s:s}", "sandbox_id", "sb-1", "command", "ls /");
	json_t *entries, *req, *out;

	assert_true(enter(f, "sandbox_exec", json_incref(args), &s, 1, &denial));
	assert_null(denial);
	assert_int_equal(s.asked, 0);
	assert_true(lg_gate_outcome(
	    &f->g,
	    &(struct lg_gate_req){
		.who = "test", .tool = "sandbox_exec", .args = args, .request_id = "req-1"},
	    "ok", json_pack("{s:i, s:s}", "exit_code", 3, "outcome", "x")));
	json_decref(args);
	entries = log_entries(f);
	assert_int_equal(json_array_size(entries), 2);
	req = json_array_get(entries, 0);
	out = json_array_get(entries, 1);
	assert_string_equal(json_string_value(json_object_get(req, "type")), "request");
	assert_string_equal(json_string_value(json_object_get(req, "verdict")), "green");
	assert_string_equal(json_string_value(json_object_get(req, "rule")), "exec");
	assert_string_equal(json_string_value(json_object_get(req, "session")), "test");
	assert_string_equal(json_string_value(json_object_get(req, "request_id")), "req-1");
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(req, "args"), "command")), "ls /");
	assert_string_equal(json_string_value(json_object_get(out, "type")), "outcome");
	/* A field cannot rename the outcome. */
	assert_string_equal(json_string_value(json_object_get(out, "outcome")), "ok");
	assert_int_equal(json_integer_value(json_object_get(out, "exit_code")), 3);
	assert_string_equal(json_string_value(json_object_get(out, "request_id")), "req-1");
	json_decref(entries);
}

static void test_red_approved(void **state)
{
	struct fixture *f = *state;
	struct script s = {.how = ASK_APPROVE};
	char *denial = NULL;

	assert_true(enter(f, "sandbox_exec",
			  json_pack("{s:s, s:s}", "sandbox_id", "sb-1", "command", "danger"), &s, 1,
			  &denial));
	assert_null(denial);
	assert_int_equal(s.asked, 1);
	assert_int_equal(s.forgotten, 1);
	assert_int_equal(s.decide_ret, 0);
	/* The card as the broker holds it: its id, who asked, why it is red. */
	assert_non_null(json_string_value(json_object_get(s.card, "approval")));
	assert_string_equal(json_string_value(json_object_get(s.card, "session")), "test");
	assert_string_equal(json_string_value(json_object_get(s.card, "rule")), "danger");
	assert_string_equal(json_string_value(json_object_get(s.card, "where")), "sb-1");
	assert_string_equal(json_string_value(json_object_get(s.card, "summary")), "run `danger`");
	assert_true(approvals_count(f, "approved") == 1);
	json_decref(s.card);
}

static void test_red_denied(void **state)
{
	struct fixture *f = *state;
	struct script s = {.how = ASK_DENY};
	char *denial = NULL;
	json_t *entries;

	assert_false(
	    enter(f, "sandbox_exec", json_pack("{s:s}", "command", "danger"), &s, 1, &denial));
	assert_non_null(denial);
	assert_non_null(strstr(denial, "was denied by tester: no way; the action did not run"));
	assert_int_equal(strncmp(denial, "sandbox_exec (approval ap-", 26), 0);
	assert_int_equal(s.forgotten, 1);
	entries = log_entries(f);
	assert_string_equal(
	    json_string_value(json_object_get(last_of(entries, "outcome"), "outcome")),
	    "not run: denied");
	assert_true(approvals_count(f, "denied") == 1);
	json_decref(entries);
	json_decref(s.card);
	free(denial);
}

static void test_red_silent_times_out(void **state)
{
	struct fixture *f = *state;
	struct script s = {.how = ASK_SILENT};
	char *denial = NULL;
	uint64_t t0 = lg_now_ms();

	assert_false(
	    enter(f, "sandbox_exec", json_pack("{s:s}", "command", "danger"), &s, 1, &denial));
	/* The broker's 1 s timeout is a no. */
	assert_true(lg_now_ms() - t0 >= 900);
	assert_non_null(strstr(denial, "was not approved in time"));
	assert_non_null(strstr(denial, "; the action did not run"));
	assert_int_equal(s.forgotten, 1);
	assert_true(approvals_count(f, "timeout") == 1);
	json_decref(s.card);
	free(denial);
}

static void test_relative_path(void **state)
{
	struct fixture *f = *state;
	struct script s = {.how = ASK_APPROVE};
	char *denial = NULL;
	json_t *entries;

	assert_false(enter(f, "sandbox_fs_write",
			   json_pack("{s:s, s:s, s:s}", "sandbox_id", "sb-1", "path", "etc/passwd",
				     "content", "x"),
			   &s, 1, &denial));
	assert_int_equal(s.asked, 0);
	assert_string_equal(denial,
			    "sandbox_fs_write: path must be an absolute path in the sandbox "
			    "(starting with /), not 'etc/passwd'");
	entries = log_entries(f);
	assert_int_equal(json_array_size(entries), 2);
	assert_string_equal(
	    json_string_value(json_object_get(last_of(entries, "outcome"), "outcome")),
	    "not run: relative path");
	json_decref(entries);
	free(denial);
}

static void test_unwritable_log_refuses(void **state)
{
	struct fixture *f = *state;
	struct script s = {.how = ASK_APPROVE};
	char *denial = NULL;
	struct rlimit old, lim;
	void (*old_xfsz)(int) = signal(SIGXFSZ, SIG_IGN);
	bool ok;

	/* A log that cannot grow: the append fails with EFBIG. */
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = 0;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	ok = enter(f, "sandbox_exec", json_pack("{s:s}", "command", "ls"), &s, 1, &denial);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, old_xfsz);
	assert_false(ok);
	assert_int_equal(s.asked, 0);
	assert_string_equal(denial,
			    "sandbox_exec: the audit log cannot be written; refusing to act");
	free(denial);

	/* Arguments too big for an entry whose side file cannot be written: the same. */
	{
		cleanup_free char *blobs = xasprintf("%s.blobs", f->log_path);
		cleanup_free char *big = xmalloc(100000 + 1);
		FILE *fp = fopen(blobs, "w"); /* a file where the directory should be */

		assert_non_null(fp);
		fclose(fp);
		memset(big, 'a', 100000);
		big[100000] = '\0';
		assert_false(
		    enter(f, "sandbox_exec", json_pack("{s:s}", "command", big), &s, 1, &denial));
		assert_int_equal(s.asked, 0);
		assert_non_null(strstr(denial, "the audit log cannot be written"));
		free(denial);
	}
}

static void test_card_cuts_big_argument(void **state)
{
	struct fixture *f = *state;
	struct script s = {.how = ASK_DENY};
	size_t big_len = 1u << 20;
	cleanup_free char *big = xmalloc(big_len + 1);
	char *denial = NULL;
	json_t *omitted, *entries, *req;
	const char *o0;

	memset(big, 'x', big_len);
	memcpy(big, "danger ", 7);
	big[big_len] = '\0';
	assert_false(enter(f, "sandbox_exec", json_pack("{s:s}", "command", big), &s, 1, &denial));
	free(denial);
	assert_int_equal(s.asked, 1);
	assert_int_equal(
	    json_string_length(json_object_get(json_object_get(s.card, "args"), "command")), 4096);
	omitted = json_object_get(s.card, "omitted");
	assert_int_equal(json_array_size(omitted), 1);
	o0 = json_string_value(json_array_get(omitted, 0));
	assert_non_null(strstr(o0, "args.command: only the first 4096 of 1048576 bytes"));
	assert_non_null(strstr(o0, "sha256 "));
	assert_non_null(strstr(json_string_value(json_object_get(s.card, "summary")),
			       "more bytes; the whole of it is in the card's args"));
	/* The audit log keeps the whole of it, in a side file. */
	entries = log_entries(f);
	req = last_of(entries, "request");
	assert_int_equal(strncmp(json_string_value(json_object_get(req, "args")), "sha256:", 7), 0);
	json_decref(entries);
	json_decref(s.card);
}

static void test_first_answer_wins(void **state)
{
	struct fixture *f = *state;
	struct script s[2] = {{.how = ASK_LATER_APPROVE, .delay_ms = 50},
			      {.how = ASK_LATER_DENY, .delay_ms = 300}};
	char *denial = NULL;

	assert_true(
	    enter(f, "sandbox_exec", json_pack("{s:s}", "command", "danger"), s, 2, &denial));
	assert_null(denial);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(s[i].asked, 1);
		assert_int_equal(s[i].forgotten, 1);
		json_decref(s[i].card);
	}
	assert_int_equal(s[0].decide_ret, 0);
	/* Too late: the first decision stands. */
	assert_int_equal(s[1].decide_ret, -ENOENT);
}

static int read_old(void *ctx, const char *path, uint8_t **out, size_t *len)
{
	(void)ctx;
	assert_string_equal(path, "/etc/x");
	*out = (uint8_t *)xstrdup("old\n");
	*len = 4;
	return 0;
}

static void test_write_card_before_after(void **state)
{
	struct fixture *f = *state;
	struct script s = {.how = ASK_DENY};
	char *denial = NULL;
	struct lg_asker asker = {.ops = &script_ops, .ctx = &s};
	json_t *args = json_pack("{s:s, s:s, s:s, s:s}", "sandbox_id", "sb-1", "path", "/etc/x",
				 "content", "bmV3Cg==", "encoding", "base64");

	assert_false(lg_gate_enter(&f->g,
				   &(struct lg_gate_req){.who = "test",
							 .tool = "sandbox_fs_write",
							 .args = args,
							 .askers = &asker,
							 .n_askers = 1,
							 .read_before = read_old},
				   &denial));
	free(denial);
	assert_string_equal(json_string_value(json_object_get(s.card, "before")), "old\n");
	assert_string_equal(json_string_value(json_object_get(s.card, "after")), "new\n");
	assert_int_equal(json_integer_value(json_object_get(s.card, "after_bytes")), 4);
	/* The content is shown decoded, not twice. */
	assert_null(json_object_get(json_object_get(s.card, "args"), "content"));
	json_decref(s.card);
	json_decref(args);
}

/* The one builder of an exec's command and environment, for MCP and the API alike. */
static void test_exec_command(void **state)
{
	char **argv, **env, why[256];
	json_t *a = json_pack("[s, s]", "ls", "-l");
	json_t *e = json_pack("{s:s}", "K", "v=w");
	json_t *big = json_array();

	assert_int_equal(
	    lg_gate_exec_command(NULL, "echo hi", NULL, 8, &argv, &env, why, sizeof(why)), 0);
	assert_string_equal(argv[0], "/bin/sh");
	assert_string_equal(argv[1], "-c");
	assert_string_equal(argv[2], "echo hi");
	assert_null(argv[3]);
	assert_null(env);
	lg_strv_free(argv);

	assert_int_equal(lg_gate_exec_command(a, NULL, e, 8, &argv, &env, why, sizeof(why)), 0);
	assert_string_equal(argv[0], "ls");
	assert_string_equal(argv[1], "-l");
	assert_null(argv[2]);
	assert_string_equal(env[0], "K=v=w");
	assert_null(env[1]);
	lg_strv_free(argv);
	lg_strv_free(env);

	/* Refused, each with one line and nothing allocated. */
	assert_int_equal(lg_gate_exec_command(a, "ls", NULL, 8, &argv, &env, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "not both or neither"));
	assert_int_equal(lg_gate_exec_command(NULL, NULL, NULL, 8, &argv, &env, why, sizeof(why)),
			 -1);
	assert_int_equal(lg_gate_exec_command(a, NULL, NULL, 1, &argv, &env, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "at most 1 strings"));
	assert_int_equal(lg_gate_exec_command(big, NULL, NULL, 8, &argv, &env, why, sizeof(why)),
			 -1);
	json_array_append_new(big, json_stringn("a\0b", 3));
	assert_int_equal(lg_gate_exec_command(big, NULL, NULL, 8, &argv, &env, why, sizeof(why)),
			 -1);
	assert_non_null(strstr(why, "argv[0]"));
	json_t *bad_env[] = {json_pack("{s:i}", "K", 1), json_pack("{s:s}", "A=B", "x"),
			     json_pack("{s:s}", "", "x"), json_string("K=v")};
	for (size_t i = 0; i < ARRAY_SIZE(bad_env); i++) {
		assert_int_equal(
		    lg_gate_exec_command(a, NULL, bad_env[i], 8, &argv, &env, why, sizeof(why)),
		    -1);
		assert_null(argv);
		assert_null(env);
		assert_null(strchr(why, '\n'));
		json_decref(bad_env[i]);
	}
	json_decref(a);
	json_decref(e);
	json_decref(big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_green, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_red_approved, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_red_denied, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_red_silent_times_out, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_relative_path, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unwritable_log_refuses, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_card_cuts_big_argument, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_first_answer_wins, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_write_card_before_after, setup, teardown),
	    cmocka_unit_test(test_exec_command),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
