/* SPDX-License-Identifier: Apache-2.0 */
/* The metrics registry: exact exposition, escaping, order, bounds, and updates from many threads.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "common/metrics.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define V(...) ((const char *const[]){__VA_ARGS__})

static struct lg_metric *reg(struct lg_metrics *m, const struct lg_metric_desc *d)
{
	struct lg_metric *f = NULL;
	struct lg_err *err = NULL;

	if (lg_metrics_register(m, d, &f, &err) < 0)
		fail_msg("register %s: %s", d->name, err->msg);
	return f;
}

/* Registers d expecting failure; returns the message (caller frees). */
static char *reg_fails(struct lg_metrics *m, const struct lg_metric_desc *d, int expect)
{
	struct lg_metric *f = NULL;
	struct lg_err *err = NULL;
	char *msg;

	assert_int_equal(lg_metrics_register(m, d, &f, &err), expect);
	assert_null(f);
	assert_non_null(err);
	assert_null(strchr(err->msg, '\n'));
	msg = strdup(err->msg);
	lg_err_free(&err);
	return msg;
}

static void assert_render(struct lg_metrics *m, const char *want)
{
	char *got = lg_metrics_render(m);

	if (strcmp(got, want) != 0)
		fail_msg("render:\n%s\nwanted:\n%s", got, want);
	free(got);
}

static void test_counter(void **state)
{
	struct lg_metrics *m = lg_metrics_new();
	struct lg_metric *f = reg(m, &(struct lg_metric_desc){.kind = LG_METRIC_COUNTER,
							      .name = "req_total",
							      .help = "Requests.",
							      .labels = {"code", "method"},
							      .nlabels = 2});
	struct lg_metric *plain =
	    reg(m, &(struct lg_metric_desc){
		       .kind = LG_METRIC_COUNTER, .name = "plain_total", .help = "P."});
	struct lg_metric_child *a = lg_metric_child(f, V("200", "GET"));

	assert_int_equal(lg_metric_inc(a), 0);
	assert_int_equal(lg_metric_counter_add(a, 41), 0);
	assert_ptr_equal(lg_metric_child(f, V("200", "GET")), a);
	assert_int_equal(lg_metric_counter_add(lg_metric_child(f, V("500", "POST")), 3), 0);
	/* the integer part stays exact past 2^53 while no fraction was added */
	assert_int_equal(
	    lg_metric_counter_add(lg_metric_child(plain, NULL), 18446744073709551615ULL), 0);
	assert_render(m, "# HELP plain_total P.\n"
			 "# TYPE plain_total counter\n"
			 "plain_total 18446744073709551615\n"
			 "# HELP req_total Requests.\n"
			 "# TYPE req_total counter\n"
			 "req_total{code=\"200\",method=\"GET\"} 42\n"
			 "req_total{code=\"500\",method=\"POST\"} 3\n");
	assert_int_equal(lg_metric_counter_add_f(a, 0.5), 0);
	assert_int_equal(lg_metric_counter_add_f(a, -1), -EINVAL);
	assert_int_equal(lg_metric_counter_add_f(a, NAN), -EINVAL);
	assert_true(lg_metric_value(a) == 42.5);
	char *out = lg_metrics_render(m);
	assert_non_null(strstr(out, "req_total{code=\"200\",method=\"GET\"} 42.5\n"));
	free(out);
	/* wrong kinds change nothing */
	assert_int_equal(lg_metric_gauge_set(a, 1), -EINVAL);
	assert_int_equal(lg_metric_gauge_add(a, 1), -EINVAL);
	assert_int_equal(lg_metric_observe(a, 1), -EINVAL);
	assert_true(lg_metric_value(a) == 42.5);
	lg_metrics_free(m);
}

static void test_gauge(void **state)
{
	struct lg_metrics *m = lg_metrics_new();
	struct lg_metric *f = reg(m, &(struct lg_metric_desc){.kind = LG_METRIC_GAUGE,
							      .name = "g",
							      .help = "A gauge.",
							      .labels = {"k"},
							      .nlabels = 1});
	static const struct {
		const char *key;
		double v;
	} cases[] = {
	    {"a_int", 3},	   {"b_neg", -7},
	    {"c_frac", 0.1},	   {"d_pinf", INFINITY},
	    {"e_ninf", -INFINITY}, {"f_nan", NAN},
	    {"g_big", 1e22},	   {"h_2p53", 9007199254740992.0},
	    {"i_tiny", 1.5e-300},  {"j_negzero", -0.0},
	    {"k_third", 1.0 / 3},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_int_equal(lg_metric_gauge_set(lg_metric_child(f, &cases[i].key), cases[i].v),
				 0);
	struct lg_metric_child *c = lg_metric_child(f, V("l_moves"));
	assert_int_equal(lg_metric_gauge_add(c, 5), 0);
	assert_int_equal(lg_metric_gauge_add(c, -1), 0);
	assert_int_equal(lg_metric_gauge_add(c, 0.25), 0);
	assert_int_equal(lg_metric_counter_add(c, 1), -EINVAL);
	assert_render(m, "# HELP g A gauge.\n"
			 "# TYPE g gauge\n"
			 "g{k=\"a_int\"} 3\n"
			 "g{k=\"b_neg\"} -7\n"
			 "g{k=\"c_frac\"} 0.1\n"
			 "g{k=\"d_pinf\"} +Inf\n"
			 "g{k=\"e_ninf\"} -Inf\n"
			 "g{k=\"f_nan\"} NaN\n"
			 "g{k=\"g_big\"} 1e+22\n"
			 "g{k=\"h_2p53\"} 9007199254740992\n"
			 "g{k=\"i_tiny\"} 1.5e-300\n"
			 "g{k=\"j_negzero\"} 0\n"
			 "g{k=\"k_third\"} 0.3333333333333333\n"
			 "g{k=\"l_moves\"} 4.25\n");
	lg_metrics_free(m);
}

static void test_format_double_round_trips(void **state)
{
	static const double vals[] = {0.1,
				      0.2 + 0.1,
				      1e-5,
				      123456.789,
				      -2.5e-7,
				      1.7976931348623157e308,
				      4.9e-324,
				      0.005,
				      9007199254740993.0,
				      12345678901234567.0};
	char buf[64];

	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		lg_metrics_format_double(buf, sizeof(buf), vals[i]);
		assert_true(strtod(buf, NULL) == vals[i]);
		assert_null(strchr(buf, ' '));
	}
	lg_metrics_format_double(buf, sizeof(buf), 0.30000000000000004);
	assert_string_equal(buf, "0.30000000000000004");
	lg_metrics_format_double(buf, sizeof(buf), 1e15);
	assert_string_equal(buf, "1000000000000000");
	lg_metrics_format_double(buf, sizeof(buf), -42);
	assert_string_equal(buf, "-42");
}

static const double bounds[] = {0.1, 1, 2.5};

static void test_histogram(void **state)
{
	struct lg_metrics *m = lg_metrics_new();
	struct lg_metric *f = reg(m, &(struct lg_metric_desc){.kind = LG_METRIC_HISTOGRAM,
							      .name = "lat_seconds",
							      .help = "Latency.",
							      .labels = {"path"},
							      .nlabels = 1,
							      .buckets = bounds,
							      .nbuckets = 3});
	struct lg_metric *plain = reg(m, &(struct lg_metric_desc){.kind = LG_METRIC_HISTOGRAM,
								  .name = "h",
								  .help = "",
								  .buckets = bounds,
								  .nbuckets = 1});
	struct lg_metric_child *p = lg_metric_child(f, V("pool"));

	/* an observation equal to a bound is in that bucket ("le" is inclusive) */
	assert_int_equal(lg_metric_observe(p, 0.1), 0);
	assert_int_equal(lg_metric_observe(p, -3), 0);
	assert_int_equal(lg_metric_observe(p, 0.5), 0);
	assert_int_equal(lg_metric_observe(p, 1), 0);
	assert_int_equal(lg_metric_observe(p, 2.5000001), 0);
	assert_int_equal(lg_metric_observe(p, 100), 0);
	assert_int_equal(lg_metric_observe(p, INFINITY), 0);
	assert_int_equal(lg_metric_observe(p, NAN), -EINVAL);
	assert_int_equal(lg_metric_counter_add(p, 1), -EINVAL);
	assert_true(lg_metric_value(p) == 7);
	lg_metric_child(f, V("boot")); /* exposed with zeros */
	assert_int_equal(lg_metric_observe(lg_metric_child(plain, NULL), 0.25), 0);
	assert_render(m, "# TYPE h histogram\n"
			 "h_bucket{le=\"0.1\"} 0\n"
			 "h_bucket{le=\"+Inf\"} 1\n"
			 "h_sum 0.25\n"
			 "h_count 1\n"
			 "# HELP lat_seconds Latency.\n"
			 "# TYPE lat_seconds histogram\n"
			 "lat_seconds_bucket{path=\"boot\",le=\"0.1\"} 0\n"
			 "lat_seconds_bucket{path=\"boot\",le=\"1\"} 0\n"
			 "lat_seconds_bucket{path=\"boot\",le=\"2.5\"} 0\n"
			 "lat_seconds_bucket{path=\"boot\",le=\"+Inf\"} 0\n"
			 "lat_seconds_sum{path=\"boot\"} 0\n"
			 "lat_seconds_count{path=\"boot\"} 0\n"
			 "lat_seconds_bucket{path=\"pool\",le=\"0.1\"} 2\n"
			 "lat_seconds_bucket{path=\"pool\",le=\"1\"} 4\n"
			 "lat_seconds_bucket{path=\"pool\",le=\"2.5\"} 4\n"
			 "lat_seconds_bucket{path=\"pool\",le=\"+Inf\"} 7\n"
			 "lat_seconds_sum{path=\"pool\"} +Inf\n"
			 "lat_seconds_count{path=\"pool\"} 7\n");
	lg_metrics_free(m);
}

static void test_escaping(void **state)
{
	struct lg_metrics *m = lg_metrics_new();
	struct lg_metric *f =
	    reg(m, &(struct lg_metric_desc){.kind = LG_METRIC_COUNTER,
					    .name = "esc_total",
					    .help = "Back\\slash, \"quotes\"\nand a newline.",
					    .labels = {"v"},
					    .nlabels = 1});

	lg_metric_inc(lg_metric_child(f, V("a\\b\"c\nd")));
	lg_metric_inc(lg_metric_child(f, V("caf\xc3\xa9 {x=\"y\"} # z")));
	lg_metric_inc(lg_metric_child(f, V("")));
	assert_render(m, "# HELP esc_total Back\\\\slash, \"quotes\"\\nand a newline.\n"
			 "# TYPE esc_total counter\n"
			 "esc_total{v=\"\"} 1\n"
			 "esc_total{v=\"a\\\\b\\\"c\\nd\"} 1\n"
			 "esc_total{v=\"caf\xc3\xa9 {x=\\\"y\\\"} # z\"} 1\n");
	lg_metrics_free(m);
}

static void test_sorting(void **state)
{
	struct lg_metrics *m = lg_metrics_new();
	const char *names[] = {"zz", "a:b", "A", "a_", "a"};

	for (size_t i = 0; i < 5; i++)
		reg(m, &(struct lg_metric_desc){
			   .kind = LG_METRIC_GAUGE, .name = names[i], .help = "h"});
	struct lg_metric *f = reg(m, &(struct lg_metric_desc){.kind = LG_METRIC_GAUGE,
							      .name = "kids",
							      .help = "h",
							      .labels = {"x", "y"},
							      .nlabels = 2});
	/* created out of order; ordered by the first label's value, then the second's */
	lg_metric_child(f, V("b", "1"));
	lg_metric_child(f, V("a", "2"));
	lg_metric_child(f, V("b", "0"));
	lg_metric_child(f, V("a", "10"));
	lg_metric_child(f, V("B", "9"));
	assert_render(m, "# HELP A h\n# TYPE A gauge\nA 0\n"
			 "# HELP a h\n# TYPE a gauge\na 0\n"
			 "# HELP a:b h\n# TYPE a:b gauge\na:b 0\n"
			 "# HELP a_ h\n# TYPE a_ gauge\na_ 0\n"
			 "# HELP kids h\n# TYPE kids gauge\n"
			 "kids{x=\"B\",y=\"9\"} 0\n"
			 "kids{x=\"a\",y=\"10\"} 0\n"
			 "kids{x=\"a\",y=\"2\"} 0\n"
			 "kids{x=\"b\",y=\"0\"} 0\n"
			 "kids{x=\"b\",y=\"1\"} 0\n"
			 "# HELP zz h\n# TYPE zz gauge\nzz 0\n");
	assert_non_null(lg_metrics_find(m, "a:b"));
	assert_null(lg_metrics_find(m, "b"));
	lg_metrics_free(m);
	/* an empty registry renders as nothing at all */
	m = lg_metrics_new();
	assert_render(m, "");
	lg_metrics_free(m);
}

static void test_bad_names(void **state)
{
	struct lg_metrics *m = lg_metrics_new();
	static const char *bad_names[] = {"", "1abc", "a-b", "a b", "a.b", "é", "a\n", "a{b}"};
	static const char *bad_labels[] = {"", "1a", "a:b", "__name__", "__x", "a-b", "a b"};
	static const double dec[] = {1, 0.5}, same[] = {1, 1}, nan[] = {NAN}, inf[] = {INFINITY};
	char *msg;

	for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
		msg = reg_fails(m,
				&(struct lg_metric_desc){
				    .kind = LG_METRIC_COUNTER, .name = bad_names[i], .help = "h"},
				-EINVAL);
		assert_non_null(strstr(msg, "[a-zA-Z_:][a-zA-Z0-9_:]*"));
		free(msg);
	}
	msg = reg_fails(
	    m, &(struct lg_metric_desc){.kind = LG_METRIC_COUNTER, .name = NULL, .help = "h"},
	    -EINVAL);
	free(msg);
	for (size_t i = 0; i < sizeof(bad_labels) / sizeof(bad_labels[0]); i++) {
		msg = reg_fails(m,
				&(struct lg_metric_desc){.kind = LG_METRIC_GAUGE,
							 .name = "ok",
							 .help = "h",
							 .labels = {"fine", bad_labels[i]},
							 .nlabels = 2},
				-EINVAL);
		assert_non_null(strstr(msg, "label name"));
		free(msg);
	}
	msg = reg_fails(m,
			&(struct lg_metric_desc){.kind = LG_METRIC_GAUGE,
						 .name = "ok",
						 .help = "h",
						 .labels = {"a", "a"},
						 .nlabels = 2},
			-EINVAL);
	assert_non_null(strstr(msg, "twice"));
	free(msg);
	msg = reg_fails(m,
			&(struct lg_metric_desc){
			    .kind = LG_METRIC_GAUGE, .name = "ok", .help = "h", .nlabels = 5},
			-EINVAL);
	assert_non_null(strstr(msg, "at most 4"));
	free(msg);
	msg = reg_fails(
	    m, &(struct lg_metric_desc){.kind = LG_METRIC_GAUGE, .name = "ok", .help = NULL},
	    -EINVAL);
	free(msg);
	/* histograms: "le" reserved, buckets finite, strictly increasing, 1..64 */
	msg = reg_fails(m,
			&(struct lg_metric_desc){.kind = LG_METRIC_HISTOGRAM,
						 .name = "h",
						 .help = "h",
						 .labels = {"le"},
						 .nlabels = 1,
						 .buckets = bounds,
						 .nbuckets = 3},
			-EINVAL);
	assert_non_null(strstr(msg, "reserved"));
	free(msg);
	const struct {
		const double *b;
		size_t n;
	} bad_buckets[] = {{dec, 2},	{same, 2}, {nan, 1},	{inf, 1},
			   {bounds, 0}, {NULL, 3}, {bounds, 65}};
	for (size_t i = 0; i < sizeof(bad_buckets) / sizeof(bad_buckets[0]); i++) {
		msg = reg_fails(m,
				&(struct lg_metric_desc){.kind = LG_METRIC_HISTOGRAM,
							 .name = "h",
							 .help = "h",
							 .buckets = bad_buckets[i].b,
							 .nbuckets = bad_buckets[i].n},
				-EINVAL);
		free(msg);
	}
	msg = reg_fails(m,
			&(struct lg_metric_desc){.kind = LG_METRIC_COUNTER,
						 .name = "c",
						 .help = "h",
						 .buckets = bounds,
						 .nbuckets = 3},
			-EINVAL);
	assert_non_null(strstr(msg, "buckets given for a counter"));
	free(msg);
	msg = reg_fails(m, &(struct lg_metric_desc){.kind = 7, .name = "c", .help = "h"}, -EINVAL);
	free(msg);
	/* nothing was registered */
	assert_render(m, "");
	/* the edges that are allowed */
	reg(m, &(struct lg_metric_desc){.kind = LG_METRIC_COUNTER,
					.name = ":_a9:",
					.help = "h",
					.labels = {"_", "a_9", "_x_", "le"},
					.nlabels = 4});
	lg_metrics_free(m);
}

static void test_reregistration(void **state)
{
	struct lg_metrics *m = lg_metrics_new();
	static const double other[] = {0.1, 1, 3};
	struct lg_metric_desc d = {.kind = LG_METRIC_HISTOGRAM,
				   .name = "h",
				   .help = "help",
				   .labels = {"a"},
				   .nlabels = 1,
				   .buckets = bounds,
				   .nbuckets = 3};
	struct lg_metric *f = reg(m, &d);
	char *msg;

	lg_metric_observe(lg_metric_child(f, V("x")), 1);
	assert_ptr_equal(reg(m, &d), f); /* identical: the same family, values kept */
	assert_true(lg_metric_value(lg_metric_child(f, V("x"))) == 1);

	struct lg_metric_desc k = d;
	k.kind = LG_METRIC_COUNTER;
	k.buckets = NULL;
	k.nbuckets = 0;
	msg = reg_fails(m, &k, -EEXIST);
	assert_non_null(strstr(msg, "metric h is already registered as a histogram"));
	free(msg);
	struct lg_metric_desc variants[4] = {d, d, d, d};
	variants[0].help = "other help";
	variants[1].labels[0] = "b";
	variants[2].nlabels = 0;
	variants[3].buckets = other;
	for (size_t i = 0; i < 4; i++) {
		msg = reg_fails(m, &variants[i], -EEXIST);
		free(msg);
	}
	assert_ptr_equal(lg_metrics_find(m, "h"), f);
	lg_metrics_free(m);
}

static size_t count_lines(const char *s, const char *prefix)
{
	size_t n = 0, pl = strlen(prefix);

	for (const char *p = s; *p != '\0';) {
		if (strncmp(p, prefix, pl) == 0)
			n++;
		const char *nl = strchr(p, '\n');
		if (nl == NULL)
			break;
		p = nl + 1;
	}
	return n;
}

static void test_child_bound(void **state)
{
	struct lg_metrics *m = lg_metrics_new();
	struct lg_metric *f = reg(m, &(struct lg_metric_desc){.kind = LG_METRIC_COUNTER,
							      .name = "hostile_total",
							      .help = "h",
							      .labels = {"who", "what"},
							      .nlabels = 2});
	char v[32], *out;
	char longv[LG_METRIC_MAX_VALUE_LEN + 2];

	for (int i = 0; i < LG_METRIC_MAX_CHILDREN; i++) {
		snprintf(v, sizeof(v), "v%05d", i);
		assert_int_equal(lg_metric_inc(lg_metric_child(f, V(v, "x"))), 0);
	}
	struct lg_metric_child *first = lg_metric_child(f, V("v00000", "x"));
	/* past the bound: every new label set is one overflow child */
	struct lg_metric_child *over = lg_metric_child(f, V("new", "x"));
	for (int i = 0; i < 3000; i++) {
		snprintf(v, sizeof(v), "w%05d", i);
		struct lg_metric_child *c = lg_metric_child(f, V("x", v));
		assert_ptr_equal(c, over);
		lg_metric_inc(c);
	}
	assert_ptr_equal(lg_metric_child(f, V(LG_METRIC_OVERFLOW_VALUE, LG_METRIC_OVERFLOW_VALUE)),
			 over);
	/* known label sets still get their own child */
	assert_ptr_equal(lg_metric_child(f, V("v00000", "x")), first);
	out = lg_metrics_render(m);
	assert_int_equal(count_lines(out, "hostile_total{"), LG_METRIC_MAX_CHILDREN + 1);
	assert_non_null(strstr(out, "hostile_total{who=\"_other\",what=\"_other\"} 3000\n"));
	assert_non_null(strstr(out, "hostile_total{who=\"v01023\",what=\"x\"} 1\n"));
	free(out);

	/* values too long or not UTF-8 go to the overflow child even below the bound */
	struct lg_metric *g = reg(
	    m,
	    &(struct lg_metric_desc){
		.kind = LG_METRIC_GAUGE, .name = "g", .help = "h", .labels = {"k"}, .nlabels = 1});
	memset(longv, 'a', sizeof(longv) - 1);
	longv[sizeof(longv) - 1] = '\0';
	struct lg_metric_child *go = lg_metric_child(g, V(longv));
	assert_ptr_equal(lg_metric_child(g, V("bad \xff utf8")), go);
	assert_ptr_equal(lg_metric_child(g, V("\xc0\xaf")), go);
	assert_ptr_equal(lg_metric_child(g, V(NULL)), go);
	longv[LG_METRIC_MAX_VALUE_LEN] = '\0'; /* exactly the limit: its own child */
	assert_ptr_not_equal(lg_metric_child(g, V(longv)), go);
	lg_metric_gauge_set(go, 1);
	out = lg_metrics_render(m);
	assert_non_null(strstr(out, "g{k=\"_other\"} 1\n"));
	assert_int_equal(count_lines(out, "g{"), 2);
	free(out);
	lg_metrics_free(m);
}

static void test_standard(void **state)
{
	struct lg_metrics *m = lg_metrics_new();
	struct lg_metrics_standard s, again;
	struct lg_err *err = NULL;

	assert_int_equal(lg_metrics_register_standard(m, &s, &err), 0);
	assert_int_equal(lg_metrics_register_standard(m, &again, &err), 0);
	assert_memory_equal(&s, &again, sizeof(s));
	assert_int_equal(lg_metrics_register_standard(m, NULL, &err), 0);

	lg_metric_observe(lg_metric_child(s.spawn_seconds, V(LG_SPAWN_PATH_POOL)), 0.012);
	lg_metric_gauge_set(lg_metric_child(s.pool_ready, V("default")), 2);
	lg_metric_inc(lg_metric_child(s.pool_hits, V("default")));
	lg_metric_inc(lg_metric_child(s.pool_misses, V("default")));
	lg_metric_gauge_add(lg_metric_child(s.sandboxes, V("running")), 1);
	lg_metric_observe(lg_metric_child(s.exec_seconds, NULL), 0.3);
	lg_metric_inc(lg_metric_child(s.approvals, V("approved")));
	lg_metric_inc(lg_metric_child(s.egress_connections, V("denied")));
	lg_metric_inc(lg_metric_child(s.vmm_exits, V("exited")));

	char *out = lg_metrics_render(m);
	static const char *const want[] = {
	    "# TYPE luminaguard_spawn_seconds histogram\n",
	    "luminaguard_spawn_seconds_bucket{path=\"pool\",le=\"0.005\"} 0\n",
	    "luminaguard_spawn_seconds_bucket{path=\"pool\",le=\"0.025\"} 1\n",
	    "luminaguard_spawn_seconds_bucket{path=\"pool\",le=\"10\"} 1\n",
	    "luminaguard_spawn_seconds_count{path=\"boot\"} 0\n",
	    "luminaguard_spawn_seconds_count{path=\"restore\"} 0\n",
	    "# TYPE luminaguard_pool_ready gauge\nluminaguard_pool_ready{pool=\"default\"} 2\n",
	    "# TYPE luminaguard_pool_hits_total "
	    "counter\nluminaguard_pool_hits_total{pool=\"default\"} 1\n",
	    "# TYPE luminaguard_pool_misses_total "
	    "counter\nluminaguard_pool_misses_total{pool=\"default\"} 1\n",
	    "# TYPE luminaguard_sandboxes gauge\nluminaguard_sandboxes{state=\"running\"} 1\n",
	    "luminaguard_exec_seconds_bucket{le=\"0.001\"} 0\n",
	    "luminaguard_exec_seconds_bucket{le=\"0.5\"} 1\n",
	    "luminaguard_exec_seconds_bucket{le=\"60\"} 1\n",
	    "luminaguard_exec_seconds_count 1\n",
	    "# TYPE luminaguard_approvals_total "
	    "counter\nluminaguard_approvals_total{outcome=\"approved\"} 1\n",
	    "luminaguard_egress_connections_total{verdict=\"denied\"} 1\n",
	    "luminaguard_vmm_exits_total{reason=\"exited\"} 1\n",
	};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		if (strstr(out, want[i]) == NULL)
			fail_msg("missing %s in:\n%s", want[i], out);
	assert_int_equal(count_lines(out, "# TYPE "), 9);
	free(out);
	lg_metrics_free(m);

	/* a name the service owns, taken first with another shape, is an error */
	m = lg_metrics_new();
	reg(m, &(struct lg_metric_desc){
		   .kind = LG_METRIC_GAUGE, .name = LG_METRIC_VMM_EXITS, .help = "x"});
	assert_int_equal(lg_metrics_register_standard(m, NULL, &err), -EEXIST);
	assert_non_null(strstr(err->msg, LG_METRIC_VMM_EXITS));
	lg_err_free(&err);
	lg_metrics_free(m);
}

/* ---- concurrency ---- */

#define THREADS 8
#define ITERS	100000

struct race {
	struct lg_metrics *m;
	struct lg_metric *counter, *hist, *kids;
	atomic_int done;
	atomic_int renders;
	atomic_int bad;
};

static void *worker(void *arg)
{
	struct race *r = arg;
	struct lg_metric_child *c = lg_metric_child(r->counter, V("hot"));
	struct lg_metric_child *h = lg_metric_child(r->hist, NULL);

	for (int i = 0; i < ITERS; i++) {
		lg_metric_inc(c);
		/* 0.5 and 2 add up exactly in a double at these counts */
		lg_metric_observe(h, i % 2 == 0 ? 0.5 : 2);
		if (i % 1000 == 0) {
			/* child lookups and creations racing the renderer */
			char v[16];
			snprintf(v, sizeof(v), "k%d", i / 1000);
			lg_metric_gauge_add(lg_metric_child(r->kids, V(v)), 1);
		}
	}
	return NULL;
}

/* In every render a histogram's +Inf bucket equals its _count. */
static void *renderer(void *arg)
{
	struct race *r = arg;

	while (!atomic_load(&r->done)) {
		char *out = lg_metrics_render(r->m);
		const char *inf = strstr(out, "race_seconds_bucket{le=\"+Inf\"} ");
		const char *cnt = strstr(out, "race_seconds_count ");
		if (inf == NULL || cnt == NULL ||
		    strtoull(inf + strlen("race_seconds_bucket{le=\"+Inf\"} "), NULL, 10) !=
			strtoull(cnt + strlen("race_seconds_count "), NULL, 10))
			atomic_fetch_add(&r->bad, 1);
		free(out);
		atomic_fetch_add(&r->renders, 1);
	}
	return NULL;
}

static void test_concurrency(void **state)
{
	struct race r = {.m = lg_metrics_new()};
	pthread_t w[THREADS], rt;

	r.counter = reg(r.m, &(struct lg_metric_desc){.kind = LG_METRIC_COUNTER,
						      .name = "race_total",
						      .help = "h",
						      .labels = {"k"},
						      .nlabels = 1});
	r.hist = reg(r.m, &(struct lg_metric_desc){.kind = LG_METRIC_HISTOGRAM,
						   .name = "race_seconds",
						   .help = "h",
						   .buckets = bounds,
						   .nbuckets = 3});
	r.kids = reg(r.m, &(struct lg_metric_desc){.kind = LG_METRIC_GAUGE,
						   .name = "race_kids",
						   .help = "h",
						   .labels = {"k"},
						   .nlabels = 1});
	assert_int_equal(pthread_create(&rt, NULL, renderer, &r), 0);
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&w[i], NULL, worker, &r), 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(w[i], NULL);
	atomic_store(&r.done, 1);
	pthread_join(rt, NULL);

	assert_int_equal(atomic_load(&r.bad), 0);
	assert_true(atomic_load(&r.renders) > 0);
	char *out = lg_metrics_render(r.m);
	char want[256];
	snprintf(want, sizeof(want), "race_total{k=\"hot\"} %d\n", THREADS * ITERS);
	assert_non_null(strstr(out, want));
	snprintf(want, sizeof(want),
		 "race_seconds_bucket{le=\"0.1\"} 0\n"
		 "race_seconds_bucket{le=\"1\"} %d\n"
		 "race_seconds_bucket{le=\"2.5\"} %d\n"
		 "race_seconds_bucket{le=\"+Inf\"} %d\n"
		 "race_seconds_sum %d\n"
		 "race_seconds_count %d\n",
		 THREADS * ITERS / 2, THREADS * ITERS, THREADS * ITERS,
		 THREADS * ITERS / 2 * 5 / 2 * 1, THREADS * ITERS);
	if (strstr(out, want) == NULL)
		fail_msg("wanted:\n%s\nin:\n%s", want, out);
	for (int k = 0; k < ITERS / 1000; k++) {
		snprintf(want, sizeof(want), "race_kids{k=\"k%d\"} %d\n", k, THREADS);
		assert_non_null(strstr(out, want));
	}
	free(out);
	lg_metrics_free(r.m);
	printf("# %d renders during %d x %d updates\n", atomic_load(&r.renders), THREADS, ITERS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_counter),
	    cmocka_unit_test(test_gauge),
	    cmocka_unit_test(test_format_double_round_trips),
	    cmocka_unit_test(test_histogram),
	    cmocka_unit_test(test_escaping),
	    cmocka_unit_test(test_sorting),
	    cmocka_unit_test(test_bad_names),
	    cmocka_unit_test(test_reregistration),
	    cmocka_unit_test(test_child_bound),
	    cmocka_unit_test(test_standard),
	    cmocka_unit_test(test_concurrency),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
