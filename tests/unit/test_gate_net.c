/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of egress through the approval step (approval/gate_net.c):
 * a yes, a no and a timeout from the askers; the policy is not consulted;
 * the card says what a yes opens; request, outcome and connection events
 * reach the audit log and the metrics; close cancels a wait on another
 * thread and refuses later asks; a guest cannot have more than the cap of
 * questions waiting.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "approval/gate_net.h"
#include "audit/audit.h"
#include "common/metrics.h"
#include "common/util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * A policy that would make network access green: the gate must not ask
 * it (a rule could otherwise open what the allowlist does not name).
 */
static const char policy_text[] = "{\"version\": 1, \"rules\": ["
				  "{\"name\": \"net-green\", \"tool\": \"network\", \"verdict\": "
				  "\"green\", \"risk\": \"low\", \"reason\": \"would allow\"}]}";

/* The gate's cap (gate_net.c): more waiting questions than this are refused unasked. */
#define CAP 16

struct fixture {
	char *dir, *log_path;
	struct policy *policy;
	struct audit_log *log;
	struct approval_broker *quick; /* 1 s timeout */
	struct approval_broker *slow;  /* 60 s: only close or a decision ends a wait */
	struct lg_metrics *metrics;
	struct lg_metric *connections;
	struct lg_gate g, g_slow;
};

static int setup(void **state)
{
	char tmpl[] = "/tmp/lg-test-gate-net-XXXXXX";
	struct fixture *f = xzalloc(sizeof(*f));
	struct lg_err *err = NULL;
	struct lg_metric_desc ad = {.kind = LG_METRIC_COUNTER,
				    .name = "luminaguard_approvals_total",
				    .help = "approvals by outcome",
				    .labels = {"outcome"},
				    .nlabels = 1};
	struct lg_metric_desc cd = {.kind = LG_METRIC_COUNTER,
				    .name = "luminaguard_egress_connections_total",
				    .help = "connections by verdict",
				    .labels = {"verdict"},
				    .nlabels = 1};

	assert_non_null(mkdtemp(tmpl));
	f->dir = xstrdup(tmpl);
	f->log_path = xasprintf("%s/audit.jsonl", f->dir);
	assert_int_equal(policy_parse(policy_text, strlen(policy_text), &f->policy, &err), 0);
	assert_int_equal(audit_open(f->log_path, &f->log, &err), 0);
	f->quick = approval_broker_new(1, f->log);
	f->slow = approval_broker_new(60, f->log);
	f->metrics = lg_metrics_new();
	f->g = (struct lg_gate){.policy = f->policy, .audit = f->log, .broker = f->quick};
	assert_int_equal(lg_metrics_register(f->metrics, &ad, &f->g.approvals, &err), 0);
	assert_int_equal(lg_metrics_register(f->metrics, &cd, &f->connections, &err), 0);
	f->g_slow = f->g;
	f->g_slow.broker = f->slow;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	cleanup_free char *cmd = xasprintf("rm -rf '%s'", f->dir);

	approval_broker_free(f->quick);
	approval_broker_free(f->slow);
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

static size_t count_of(json_t *entries, const char *type)
{
	size_t i, n = 0;
	json_t *e;

	json_array_foreach(entries, i, e)
	{
		n += strcmp(json_string_value(json_object_get(e, "type")), type) == 0;
	}
	return n;
}

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

static double count(struct lg_metric *m, const char *label)
{
	return lg_metric_value(lg_metric_child(m, (const char *const[]){label}));
}

/* ---- a scripted asker ---- */

enum how { ASK_APPROVE, ASK_DENY, ASK_SILENT };

struct script {
	enum how how;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int asked, forgotten; /* under lock */
	json_t *card;	      /* the last card it was shown, under lock */
};

static void script_init(struct script *s, enum how how)
{
	memset(s, 0, sizeof(*s));
	s->how = how;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
}

static void script_fini(struct script *s)
{
	json_decref(s->card);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
}

static void *script_ask(void *ctx, struct approval *a, const json_t *card)
{
	struct script *s = ctx;

	if (s->how == ASK_APPROVE)
		approval_decide_ref(a, true, APPROVAL_CH_TTY, "tester", NULL);
	else if (s->how == ASK_DENY)
		approval_decide_ref(a, false, APPROVAL_CH_TTY, "tester", "not that host");
	pthread_mutex_lock(&s->lock);
	s->asked++;
	json_decref(s->card);
	s->card = json_deep_copy(card);
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	return s;
}

static void script_forget(void *ctx, void *token)
{
	struct script *s = ctx;

	assert_ptr_equal(token, s);
	pthread_mutex_lock(&s->lock);
	s->forgotten++;
	pthread_mutex_unlock(&s->lock);
}

static const struct lg_asker_ops script_ops = {.ask = script_ask, .forget = script_forget};

static void wait_asked(struct script *s, int n)
{
	pthread_mutex_lock(&s->lock);
	while (s->asked < n)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
}

static struct lg_gate_net *new_net(struct fixture *f, const struct lg_gate *g, struct script *s)
{
	struct lg_asker asker = {.ops = &script_ops, .ctx = s};
	struct lg_gate_net *n =
	    lg_gate_net_new(&(struct lg_gate_net_opts){.gate = g,
						       .who = "sess-1",
						       .askers = &asker,
						       .n_askers = 1,
						       .connections = f->connections});

	lg_gate_net_set_sandbox(n, "sb-000000000001");
	return n;
}

/* ---- the tests ---- */

static void test_approved(void **state)
{
	struct fixture *f = *state;
	struct script s;
	struct lg_gate_net *n;
	json_t *entries, *req, *out;

	script_init(&s, ASK_APPROVE);
	n = new_net(f, &f->g, &s);
	/* Asked although the policy would make it green: the policy is not consulted. */
	assert_true(lg_gate_net_ask(n, "example.org", 443));
	assert_int_equal(s.asked, 1);
	assert_int_equal(s.forgotten, 1);
	assert_string_equal(json_string_value(json_object_get(s.card, "tool")), "network");
	assert_string_equal(json_string_value(json_object_get(s.card, "summary")),
			    "connect to example.org:443");
	assert_string_equal(json_string_value(json_object_get(s.card, "where")), "sb-000000000001");
	assert_string_equal(json_string_value(json_object_get(s.card, "rule")), "net.allowlist");
	assert_string_equal(json_string_value(json_object_get(s.card, "session")), "sess-1");
	assert_string_equal(json_string_value(json_object_get(s.card, "risk")), "high");
	/* What a yes can open is on the card. */
	assert_string_equal(json_string_value(json_object_get(s.card, "note")),
			    lg_egress_dest_note("example.org"));
	assert_true(count(f->g.approvals, "approved") == 1);

	entries = log_entries(f);
	req = last_of(entries, "request");
	out = last_of(entries, "outcome");
	assert_non_null(req);
	assert_non_null(out);
	assert_string_equal(json_string_value(json_object_get(req, "tool")), "network");
	assert_string_equal(json_string_value(json_object_get(req, "verdict")), "red");
	assert_string_equal(json_string_value(json_object_get(req, "rule")), "net.allowlist");
	assert_string_equal(json_string_value(json_object_get(req, "session")), "sess-1");
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(req, "args"), "host")),
	    "example.org");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(req, "args"), "port")),
			 443);
	assert_string_equal(json_string_value(json_object_get(out, "outcome")), "ok");
	/* Request and outcome carry the same request id. */
	assert_string_equal(json_string_value(json_object_get(out, "request_id")),
			    json_string_value(json_object_get(req, "request_id")));
	json_decref(entries);
	lg_gate_net_close(n);
	lg_gate_net_free(n);
	script_fini(&s);
}

static void test_denied(void **state)
{
	struct fixture *f = *state;
	struct script s;
	struct lg_gate_net *n;
	json_t *entries;

	script_init(&s, ASK_DENY);
	n = new_net(f, &f->g, &s);
	assert_false(lg_gate_net_ask(n, "evil.example", 80));
	assert_int_equal(s.forgotten, 1);
	assert_true(count(f->g.approvals, "denied") == 1);
	entries = log_entries(f);
	assert_string_equal(
	    json_string_value(json_object_get(last_of(entries, "outcome"), "outcome")),
	    "not run: denied");
	json_decref(entries);
	lg_gate_net_free(n);
	script_fini(&s);
}

static void test_timeout_is_no(void **state)
{
	struct fixture *f = *state;
	struct script s;
	struct lg_gate_net *n;
	uint64_t t0 = lg_now_ms();

	script_init(&s, ASK_SILENT);
	n = new_net(f, &f->g, &s);
	assert_false(lg_gate_net_ask(n, "example.org", 443));
	assert_true(lg_now_ms() - t0 >= 900);
	assert_true(count(f->g.approvals, "timeout") == 1);
	lg_gate_net_free(n);
	script_fini(&s);
}

struct asking {
	struct lg_gate_net *n;
	char host[32];
	bool result;
	pthread_t t;
};

static void *ask_thread(void *arg)
{
	struct asking *a = arg;

	a->result = lg_gate_net_ask(a->n, a->host, 443);
	return NULL;
}

static void test_close_cancels_wait(void **state)
{
	struct fixture *f = *state;
	struct script s;
	struct asking a = {0};
	uint64_t t0;

	script_init(&s, ASK_SILENT);
	a.n = new_net(f, &f->g_slow, &s);
	snprintf(a.host, sizeof(a.host), "example.org");
	t0 = lg_now_ms();
	assert_int_equal(pthread_create(&a.t, NULL, ask_thread, &a), 0);
	wait_asked(&s, 1);
	lg_gate_net_close(a.n);
	pthread_join(a.t, NULL);
	assert_false(a.result);
	/* Ended by the close, not by the broker's 60 s. */
	assert_true(lg_now_ms() - t0 < 10000);
	assert_true(count(f->g.approvals, "cancelled") == 1);
	/* Closed: nobody is asked again. */
	assert_false(lg_gate_net_ask(a.n, "example.org", 443));
	assert_int_equal(s.asked, 1);
	lg_gate_net_free(a.n);
	script_fini(&s);
}

static void test_flood_cap(void **state)
{
	struct fixture *f = *state;
	struct script s;
	struct asking a[CAP];
	struct lg_gate_net *n;
	json_t *entries;

	script_init(&s, ASK_SILENT);
	n = new_net(f, &f->g_slow, &s);
	for (int i = 0; i < CAP; i++) {
		a[i].n = n;
		snprintf(a[i].host, sizeof(a[i].host), "h%d.example", i);
		assert_int_equal(pthread_create(&a[i].t, NULL, ask_thread, &a[i]), 0);
	}
	wait_asked(&s, CAP);
	/* One more while CAP wait: refused at once, nobody asked, nothing filed. */
	assert_false(lg_gate_net_ask(n, "one-more.example", 443));
	pthread_mutex_lock(&s.lock);
	assert_int_equal(s.asked, CAP);
	pthread_mutex_unlock(&s.lock);
	lg_gate_net_close(n);
	for (int i = 0; i < CAP; i++) {
		pthread_join(a[i].t, NULL);
		assert_false(a[i].result);
	}
	assert_int_equal(s.forgotten, CAP);
	assert_true(count(f->g.approvals, "cancelled") == CAP);
	entries = log_entries(f);
	assert_int_equal(count_of(entries, "request"), CAP);
	json_decref(entries);
	lg_gate_net_free(n);
	script_fini(&s);
}

static void test_log_event(void **state)
{
	struct fixture *f = *state;
	struct script s;
	struct lg_gate_net *n;
	json_t *entries, *e;
	struct lg_egress_event ok = {.host = "example.org",
				     .port = 443,
				     .method = "CONNECT",
				     .address = "93.184.216.34",
				     .verdict = LG_EGRESS_ALLOWED,
				     .bytes_up = 10,
				     .bytes_down = 20};
	struct lg_egress_event no = {.host = "127.0.0.1",
				     .port = 22,
				     .method = "CONNECT",
				     .verdict = LG_EGRESS_DENIED,
				     .reason = "loopback"};

	script_init(&s, ASK_SILENT);
	n = new_net(f, &f->g, &s);
	lg_gate_net_log(n, &ok);
	lg_gate_net_log(n, &no);
	assert_true(count(f->connections, "allowed") == 1);
	assert_true(count(f->connections, "denied") == 1);
	entries = log_entries(f);
	assert_int_equal(count_of(entries, "net"), 2);
	e = json_array_get(entries, 0);
	assert_string_equal(json_string_value(json_object_get(e, "session")), "sess-1");
	assert_string_equal(json_string_value(json_object_get(e, "sandbox")), "sb-000000000001");
	assert_string_equal(json_string_value(json_object_get(e, "host")), "example.org");
	assert_string_equal(json_string_value(json_object_get(e, "verdict")), "allowed");
	assert_int_equal(json_integer_value(json_object_get(e, "bytes_down")), 20);
	e = last_of(entries, "net");
	assert_string_equal(json_string_value(json_object_get(e, "verdict")), "denied");
	assert_string_equal(json_string_value(json_object_get(e, "reason")), "loopback");
	json_decref(entries);
	assert_int_equal(s.asked, 0);
	lg_gate_net_free(n);
	script_fini(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_approved, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_denied, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_timeout_is_no, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_cancels_wait, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_flood_cap, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_log_event, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
