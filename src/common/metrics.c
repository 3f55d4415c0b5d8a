/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Prometheus metrics registry (docs/metrics.md).
 *
 * Locks: the registry's lock guards its sorted family array; each family's
 * lock guards its sorted child array.  The only nesting is registry then
 * family (registration and render); child lookup takes the family lock
 * alone, and updates take none, so there is no lock-order cycle.  A child's
 * values are atomics, written with relaxed order: each is a statistic read
 * on its own, and render needs no ordering between them beyond what it
 * documents (a histogram's count is the sum of the bucket counts it read).
 */
#include "common/metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/encoding.h"
#include "common/util.h"

struct lg_metric_child {
	struct lg_metric *family;
	char *values[LG_METRIC_MAX_LABELS];
	/* counter: integer part; unused otherwise */
	_Atomic uint64_t count;
	/* bits of a double: counter fractional increments, gauge value, histogram sum */
	_Atomic uint64_t dbits;
	/* histogram: per-bucket (not cumulative) counts, nbounds + 1 (the last is +Inf) */
	_Atomic uint64_t *buckets;
};

struct lg_metric {
	enum lg_metric_kind kind;
	char *name;
	char *help;
	char *labels[LG_METRIC_MAX_LABELS];
	size_t nlabels;
	double *bounds;
	size_t nbounds;
	pthread_mutex_t lock;
	struct lg_metric_child **children; /* sorted by values; guarded by lock */
	size_t nchildren;
};

struct lg_metrics {
	pthread_mutex_t lock;
	struct lg_metric **families; /* sorted by name; guarded by lock */
	size_t nfamilies;
};

static const char *const kind_names[] = {
    [LG_METRIC_COUNTER] = "counter",
    [LG_METRIC_GAUGE] = "gauge",
    [LG_METRIC_HISTOGRAM] = "histogram",
};

static double bits_to_double(uint64_t b)
{
	double d;
	memcpy(&d, &b, sizeof(d));
	return d;
}

static uint64_t double_to_bits(double d)
{
	uint64_t b;
	memcpy(&b, &d, sizeof(b));
	return b;
}

static void atomic_add_double(_Atomic uint64_t *p, double v)
{
	uint64_t old = atomic_load_explicit(p, memory_order_relaxed);

	while (!atomic_compare_exchange_weak_explicit(p, &old,
						      double_to_bits(bits_to_double(old) + v),
						      memory_order_relaxed, memory_order_relaxed))
		;
}

/* ---- names ---- */

static bool name_valid(const char *s, bool colon)
{
	if (s == NULL || *s == '\0')
		return false;
	for (size_t i = 0; s[i] != '\0'; i++) {
		char c = s[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
			  (colon && c == ':') || (i > 0 && c >= '0' && c <= '9');
		if (!ok)
			return false;
	}
	return true;
}

/* s for an error message: at most 64 bytes, bytes outside printable ASCII as '?'. */
static const char *printable(const char *s, char *buf, size_t n)
{
	size_t i = 0;

	if (s == NULL)
		return "(null)";
	for (; s[i] != '\0' && i + 1 < n; i++)
		buf[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
	buf[i] = '\0';
	return buf;
}

static int check_desc(const struct lg_metric_desc *d, struct lg_err **err)
{
	char pn[65], pl[65];

	if ((unsigned)d->kind >= ARRAY_SIZE(kind_names))
		return lg_err_msg(err, EINVAL, "metric: unknown kind %d", (int)d->kind);
	if (!name_valid(d->name, true))
		return lg_err_msg(err, EINVAL,
				  "metric name \"%s\" is not of the form [a-zA-Z_:][a-zA-Z0-9_:]*",
				  printable(d->name, pn, sizeof(pn)));
	if (d->help == NULL)
		return lg_err_msg(err, EINVAL, "metric %s: no help text", d->name);
	if (d->nlabels > LG_METRIC_MAX_LABELS)
		return lg_err_msg(err, EINVAL, "metric %s: %zu labels, at most %d", d->name,
				  d->nlabels, LG_METRIC_MAX_LABELS);
	for (size_t i = 0; i < d->nlabels; i++) {
		const char *l = d->labels[i];
		if (!name_valid(l, false) || strncmp(l, "__", 2) == 0)
			return lg_err_msg(err, EINVAL,
					  "metric %s: label name \"%s\" is not of the form "
					  "[a-zA-Z_][a-zA-Z0-9_]* without a leading __",
					  d->name, printable(l, pl, sizeof(pl)));
		if (d->kind == LG_METRIC_HISTOGRAM && strcmp(l, "le") == 0)
			return lg_err_msg(
			    err, EINVAL,
			    "metric %s: label name \"le\" is reserved for histogram buckets",
			    d->name);
		for (size_t j = 0; j < i; j++)
			if (strcmp(l, d->labels[j]) == 0)
				return lg_err_msg(
				    err, EINVAL, "metric %s: label \"%s\" given twice", d->name, l);
	}
	if (d->kind != LG_METRIC_HISTOGRAM) {
		if (d->nbuckets != 0)
			return lg_err_msg(err, EINVAL, "metric %s: buckets given for a %s", d->name,
					  kind_names[d->kind]);
		return 0;
	}
	if (d->nbuckets == 0 || d->buckets == NULL || d->nbuckets > LG_METRIC_MAX_BUCKETS)
		return lg_err_msg(err, EINVAL, "metric %s: a histogram needs 1 to %d buckets",
				  d->name, LG_METRIC_MAX_BUCKETS);
	for (size_t i = 0; i < d->nbuckets; i++) {
		if (!isfinite(d->buckets[i]))
			return lg_err_msg(
			    err, EINVAL,
			    "metric %s: bucket bound %zu is not finite (+Inf is implied)", d->name,
			    i);
		if (i > 0 && !(d->buckets[i] > d->buckets[i - 1]))
			return lg_err_msg(err, EINVAL,
					  "metric %s: bucket bounds must increase strictly",
					  d->name);
	}
	return 0;
}

static bool same_desc(const struct lg_metric *f, const struct lg_metric_desc *d)
{
	if (f->kind != d->kind || strcmp(f->help, d->help) != 0 || f->nlabels != d->nlabels ||
	    f->nbounds != d->nbuckets)
		return false;
	for (size_t i = 0; i < f->nlabels; i++)
		if (strcmp(f->labels[i], d->labels[i]) != 0)
			return false;
	for (size_t i = 0; i < f->nbounds; i++)
		if (f->bounds[i] != d->buckets[i])
			return false;
	return true;
}

/* ---- children ---- */

static int values_cmp(const struct lg_metric *f, char *const *a, const char *const *b)
{
	for (size_t i = 0; i < f->nlabels; i++) {
		int r = strcmp(a[i], b[i]);
		if (r != 0)
			return r;
	}
	return 0;
}

/* Index of values in f->children, or ~insertion point.  Caller holds f->lock. */
static size_t child_search(const struct lg_metric *f, const char *const *values, bool *found)
{
	size_t lo = 0, hi = f->nchildren;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int r = values_cmp(f, f->children[mid]->values, values);
		if (r == 0) {
			*found = true;
			return mid;
		}
		if (r < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = false;
	return lo;
}

static struct lg_metric_child *child_insert(struct lg_metric *f, size_t at,
					    const char *const *values)
{
	struct lg_metric_child *c = xzalloc(sizeof(*c));

	c->family = f;
	for (size_t i = 0; i < f->nlabels; i++)
		c->values[i] = xstrdup(values[i]);
	if (f->kind == LG_METRIC_HISTOGRAM) {
		c->buckets = xmalloc((f->nbounds + 1) * sizeof(*c->buckets));
		for (size_t i = 0; i <= f->nbounds; i++)
			atomic_init(&c->buckets[i], 0);
	}
	atomic_init(&c->count, 0);
	atomic_init(&c->dbits, double_to_bits(0.0));
	f->children = xrealloc(f->children, (f->nchildren + 1) * sizeof(*f->children));
	memmove(&f->children[at + 1], &f->children[at], (f->nchildren - at) * sizeof(*f->children));
	f->children[at] = c;
	f->nchildren++;
	return c;
}

static bool value_acceptable(const char *v)
{
	if (v == NULL)
		return false;
	size_t n = strnlen(v, LG_METRIC_MAX_VALUE_LEN + 1);
	return n <= LG_METRIC_MAX_VALUE_LEN && lg_utf8_valid((const uint8_t *)v, n);
}

/* Caller holds f->lock. */
static struct lg_metric_child *child_get_locked(struct lg_metric *f, const char *const *values)
{
	static const char *const overflow[LG_METRIC_MAX_LABELS] = {
	    LG_METRIC_OVERFLOW_VALUE, LG_METRIC_OVERFLOW_VALUE, LG_METRIC_OVERFLOW_VALUE,
	    LG_METRIC_OVERFLOW_VALUE};
	bool found;
	size_t at;

	for (size_t i = 0; i < f->nlabels; i++)
		if (!value_acceptable(values[i])) {
			values = overflow;
			break;
		}
	at = child_search(f, values, &found);
	if (found)
		return f->children[at];
	/*
	 * Past the bound every new label set shares the overflow child, which is
	 * created once (it may make the count LG_METRIC_MAX_CHILDREN + 1) and
	 * from then on is always found: the array cannot grow further.
	 */
	if (f->nchildren >= LG_METRIC_MAX_CHILDREN && values != overflow) {
		values = overflow;
		at = child_search(f, values, &found);
		if (found)
			return f->children[at];
	}
	return child_insert(f, at, values);
}

struct lg_metric_child *lg_metric_child(struct lg_metric *f, const char *const *values)
{
	struct lg_metric_child *c;

	pthread_mutex_lock(&f->lock);
	c = child_get_locked(f, values);
	pthread_mutex_unlock(&f->lock);
	return c;
}

/* ---- registry ---- */

struct lg_metrics *lg_metrics_new(void)
{
	struct lg_metrics *m = xzalloc(sizeof(*m));
	pthread_mutex_init(&m->lock, NULL);
	return m;
}

static void family_free(struct lg_metric *f)
{
	for (size_t i = 0; i < f->nchildren; i++) {
		struct lg_metric_child *c = f->children[i];
		for (size_t j = 0; j < f->nlabels; j++)
			free(c->values[j]);
		free(c->buckets);
		free(c);
	}
	free(f->children);
	for (size_t j = 0; j < f->nlabels; j++)
		free(f->labels[j]);
	free(f->bounds);
	free(f->name);
	free(f->help);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

void lg_metrics_free(struct lg_metrics *m)
{
	if (m == NULL)
		return;
	for (size_t i = 0; i < m->nfamilies; i++)
		family_free(m->families[i]);
	free(m->families);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

/* Index of name in m->families, or the insertion point.  Caller holds m->lock. */
static size_t family_search(const struct lg_metrics *m, const char *name, bool *found)
{
	size_t lo = 0, hi = m->nfamilies;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int r = strcmp(m->families[mid]->name, name);
		if (r == 0) {
			*found = true;
			return mid;
		}
		if (r < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = false;
	return lo;
}

int lg_metrics_register(struct lg_metrics *m, const struct lg_metric_desc *d,
			struct lg_metric **out, struct lg_err **err)
{
	struct lg_metric *f;
	bool found;
	size_t at;
	int r = check_desc(d, err);

	if (r < 0)
		return r;
	pthread_mutex_lock(&m->lock);
	at = family_search(m, d->name, &found);
	if (found) {
		f = m->families[at];
		pthread_mutex_unlock(&m->lock);
		if (!same_desc(f, d))
			return lg_err_msg(err, EEXIST,
					  "metric %s is already registered as a %s with other "
					  "help, labels or buckets",
					  d->name, kind_names[f->kind]);
		if (out != NULL)
			*out = f;
		return 0;
	}
	f = xzalloc(sizeof(*f));
	f->kind = d->kind;
	f->name = xstrdup(d->name);
	f->help = xstrdup(d->help);
	f->nlabels = d->nlabels;
	for (size_t i = 0; i < d->nlabels; i++)
		f->labels[i] = xstrdup(d->labels[i]);
	if (d->kind == LG_METRIC_HISTOGRAM) {
		f->nbounds = d->nbuckets;
		f->bounds = xmalloc(d->nbuckets * sizeof(*f->bounds));
		memcpy(f->bounds, d->buckets, d->nbuckets * sizeof(*f->bounds));
	}
	pthread_mutex_init(&f->lock, NULL);
	/* A family without labels has its one child from the start: it renders as 0. */
	if (f->nlabels == 0)
		child_insert(f, 0, NULL);
	m->families = xrealloc(m->families, (m->nfamilies + 1) * sizeof(*m->families));
	memmove(&m->families[at + 1], &m->families[at], (m->nfamilies - at) * sizeof(*m->families));
	m->families[at] = f;
	m->nfamilies++;
	pthread_mutex_unlock(&m->lock);
	if (out != NULL)
		*out = f;
	return 0;
}

struct lg_metric *lg_metrics_find(struct lg_metrics *m, const char *name)
{
	struct lg_metric *f = NULL;
	bool found;
	size_t at;

	pthread_mutex_lock(&m->lock);
	at = family_search(m, name, &found);
	if (found)
		f = m->families[at];
	pthread_mutex_unlock(&m->lock);
	return f;
}

/* ---- updates ---- */

int lg_metric_counter_add(struct lg_metric_child *c, uint64_t n)
{
	if (c->family->kind != LG_METRIC_COUNTER)
		return -EINVAL;
	atomic_fetch_add_explicit(&c->count, n, memory_order_relaxed);
	return 0;
}

int lg_metric_counter_add_f(struct lg_metric_child *c, double v)
{
	if (c->family->kind != LG_METRIC_COUNTER || !(v >= 0))
		return -EINVAL;
	atomic_add_double(&c->dbits, v);
	return 0;
}

int lg_metric_gauge_set(struct lg_metric_child *c, double v)
{
	if (c->family->kind != LG_METRIC_GAUGE)
		return -EINVAL;
	atomic_store_explicit(&c->dbits, double_to_bits(v), memory_order_relaxed);
	return 0;
}

int lg_metric_gauge_add(struct lg_metric_child *c, double v)
{
	if (c->family->kind != LG_METRIC_GAUGE)
		return -EINVAL;
	atomic_add_double(&c->dbits, v);
	return 0;
}

int lg_metric_observe(struct lg_metric_child *c, double v)
{
	const struct lg_metric *f = c->family;
	size_t lo = 0, hi = f->nbounds;

	if (f->kind != LG_METRIC_HISTOGRAM || isnan(v))
		return -EINVAL;
	/* The first bucket whose upper bound is >= v ("le" is inclusive); nbounds is +Inf. */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (f->bounds[mid] < v)
			lo = mid + 1;
		else
			hi = mid;
	}
	atomic_fetch_add_explicit(&c->buckets[lo], 1, memory_order_relaxed);
	atomic_add_double(&c->dbits, v);
	return 0;
}

static uint64_t histogram_count(const struct lg_metric_child *c)
{
	uint64_t n = 0;

	for (size_t i = 0; i <= c->family->nbounds; i++)
		n += atomic_load_explicit(&c->buckets[i], memory_order_relaxed);
	return n;
}

double lg_metric_value(const struct lg_metric_child *c)
{
	double d = bits_to_double(atomic_load_explicit(&c->dbits, memory_order_relaxed));

	switch (c->family->kind) {
	case LG_METRIC_COUNTER:
		return (double)atomic_load_explicit(&c->count, memory_order_relaxed) + d;
	case LG_METRIC_GAUGE:
		return d;
	case LG_METRIC_HISTOGRAM:
		return (double)histogram_count(c);
	}
	return NAN;
}

/* ---- exposition ---- */

struct buf {
	char *p;
	size_t len, cap;
};

static void buf_put(struct buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->p = xrealloc(b->p, b->cap);
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *s)
{
	buf_put(b, s, strlen(s));
}

/* Help text escapes \ and newline; label values also escape ". */
static void buf_escaped(struct buf *b, const char *s, bool quote)
{
	for (; *s != '\0'; s++) {
		if (*s == '\\')
			buf_str(b, "\\\\");
		else if (*s == '\n')
			buf_str(b, "\\n");
		else if (quote && *s == '"')
			buf_str(b, "\\\"");
		else
			buf_put(b, s, 1);
	}
}

void lg_metrics_format_double(char *out, size_t n, double v)
{
	if (isnan(v)) {
		snprintf(out, n, "NaN");
	} else if (isinf(v)) {
		snprintf(out, n, v > 0 ? "+Inf" : "-Inf");
	} else if (v == 0) {
		snprintf(out, n, "0"); /* also -0: Go parses "-0", but 0 reads better */
	} else if (fabs(v) <= 9007199254740992.0 && v == (double)(int64_t)v) {
		/* Every integer up to 2^53 is exact in a double: write it whole. */
		snprintf(out, n, "%.0f", v);
	} else {
		/* The shortest %g that reads back as the same double. */
		for (int prec = 15; prec <= 17; prec++) {
			snprintf(out, n, "%.*g", prec, v);
			if (strtod(out, NULL) == v)
				break;
		}
	}
}

static void buf_double(struct buf *b, double v)
{
	char s[64];

	lg_metrics_format_double(s, sizeof(s), v);
	buf_str(b, s);
}

static void buf_u64(struct buf *b, uint64_t v)
{
	char s[32];

	snprintf(s, sizeof(s), "%" PRIu64, v);
	buf_str(b, s);
}

/* NAME SUFFIX{l1="v1",...[,le="LE"]} */
static void sample_start(struct buf *b, const struct lg_metric *f, const struct lg_metric_child *c,
			 const char *suffix, const char *le)
{
	buf_str(b, f->name);
	buf_str(b, suffix);
	if (f->nlabels == 0 && le == NULL)
		return;
	buf_str(b, "{");
	for (size_t i = 0; i < f->nlabels; i++) {
		if (i > 0)
			buf_str(b, ",");
		buf_str(b, f->labels[i]);
		buf_str(b, "=\"");
		buf_escaped(b, c->values[i], true);
		buf_str(b, "\"");
	}
	if (le != NULL) {
		if (f->nlabels > 0)
			buf_str(b, ",");
		buf_str(b, "le=\"");
		buf_str(b, le);
		buf_str(b, "\"");
	}
	buf_str(b, "}");
}

static void render_child(struct buf *b, const struct lg_metric *f, const struct lg_metric_child *c)
{
	double d = bits_to_double(atomic_load_explicit(&c->dbits, memory_order_relaxed));

	switch (f->kind) {
	case LG_METRIC_COUNTER: {
		uint64_t n = atomic_load_explicit(&c->count, memory_order_relaxed);
		sample_start(b, f, c, "", NULL);
		buf_str(b, " ");
		if (d == 0)
			buf_u64(b, n); /* exact past 2^53, where a double would round */
		else
			buf_double(b, (double)n + d);
		break;
	}
	case LG_METRIC_GAUGE:
		sample_start(b, f, c, "", NULL);
		buf_str(b, " ");
		buf_double(b, d);
		break;
	case LG_METRIC_HISTOGRAM: {
		/*
		 * Cumulative counts from one read of each bucket; _count is the
		 * +Inf bucket as read, so the two always agree, as Prometheus
		 * expects.  _sum is read on its own and may include an
		 * observation whose bucket was not yet counted.
		 */
		uint64_t cum = 0;
		char le[64];
		for (size_t i = 0; i <= f->nbounds; i++) {
			cum += atomic_load_explicit(&c->buckets[i], memory_order_relaxed);
			if (i < f->nbounds)
				lg_metrics_format_double(le, sizeof(le), f->bounds[i]);
			else
				snprintf(le, sizeof(le), "+Inf");
			sample_start(b, f, c, "_bucket", le);
			buf_str(b, " ");
			buf_u64(b, cum);
			buf_str(b, "\n");
		}
		sample_start(b, f, c, "_sum", NULL);
		buf_str(b, " ");
		buf_double(b, d);
		buf_str(b, "\n");
		sample_start(b, f, c, "_count", NULL);
		buf_str(b, " ");
		buf_u64(b, cum);
		break;
	}
	}
	buf_str(b, "\n");
}

char *lg_metrics_render(struct lg_metrics *m)
{
	struct buf b = {0};

	buf_str(&b, ""); /* an empty registry renders as "" */
	pthread_mutex_lock(&m->lock);
	for (size_t i = 0; i < m->nfamilies; i++) {
		struct lg_metric *f = m->families[i];
		if (f->help[0] != '\0') {
			buf_str(&b, "# HELP ");
			buf_str(&b, f->name);
			buf_str(&b, " ");
			buf_escaped(&b, f->help, false);
			buf_str(&b, "\n");
		}
		buf_str(&b, "# TYPE ");
		buf_str(&b, f->name);
		buf_str(&b, " ");
		buf_str(&b, kind_names[f->kind]);
		buf_str(&b, "\n");
		pthread_mutex_lock(&f->lock);
		for (size_t j = 0; j < f->nchildren; j++)
			render_child(&b, f, f->children[j]);
		pthread_mutex_unlock(&f->lock);
	}
	pthread_mutex_unlock(&m->lock);
	return b.p;
}

/* ---- the service's metrics ---- */

static const double spawn_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10};
static const double exec_buckets[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
				      0.5,   1,	    2.5,  5,	 10,   30,  60};

int lg_metrics_register_standard(struct lg_metrics *m, struct lg_metrics_standard *out,
				 struct lg_err **err)
{
	struct lg_metrics_standard s = {0};
	const struct {
		struct lg_metric **slot;
		struct lg_metric_desc desc;
	} table[] = {
	    {&s.spawn_seconds,
	     {.kind = LG_METRIC_HISTOGRAM,
	      .name = LG_METRIC_SPAWN_SECONDS,
	      .help = "Seconds from a sandbox request to a sandbox ready to run commands, by how "
		      "it was made.",
	      .labels = {"path"},
	      .nlabels = 1,
	      .buckets = spawn_buckets,
	      .nbuckets = ARRAY_SIZE(spawn_buckets)}},
	    {&s.pool_ready,
	     {.kind = LG_METRIC_GAUGE,
	      .name = LG_METRIC_POOL_READY,
	      .help = "Warm sandboxes ready to hand out, by pool.",
	      .labels = {"pool"},
	      .nlabels = 1}},
	    {&s.pool_hits,
	     {.kind = LG_METRIC_COUNTER,
	      .name = LG_METRIC_POOL_HITS,
	      .help = "Sandbox requests served from a warm pool, by pool.",
	      .labels = {"pool"},
	      .nlabels = 1}},
	    {&s.pool_misses,
	     {.kind = LG_METRIC_COUNTER,
	      .name = LG_METRIC_POOL_MISSES,
	      .help = "Sandbox requests for a pool's key that found it empty, by pool.",
	      .labels = {"pool"},
	      .nlabels = 1}},
	    {&s.sandboxes,
	     {.kind = LG_METRIC_GAUGE,
	      .name = LG_METRIC_SANDBOXES,
	      .help = "Sandboxes the service holds, by state.",
	      .labels = {"state"},
	      .nlabels = 1}},
	    {&s.exec_seconds,
	     {.kind = LG_METRIC_HISTOGRAM,
	      .name = LG_METRIC_EXEC_SECONDS,
	      .help = "Seconds from an exec request to the command's exit status.",
	      .buckets = exec_buckets,
	      .nbuckets = ARRAY_SIZE(exec_buckets)}},
	    {&s.approvals,
	     {.kind = LG_METRIC_COUNTER,
	      .name = LG_METRIC_APPROVALS,
	      .help = "Approval requests decided, by outcome.",
	      .labels = {"outcome"},
	      .nlabels = 1}},
	    {&s.egress_connections,
	     {.kind = LG_METRIC_COUNTER,
	      .name = LG_METRIC_EGRESS_CONNECTIONS,
	      .help = "Connections through the egress proxy, by verdict.",
	      .labels = {"verdict"},
	      .nlabels = 1}},
	    {&s.vmm_exits,
	     {.kind = LG_METRIC_COUNTER,
	      .name = LG_METRIC_VMM_EXITS,
	      .help = "VMM processes that ended, by reason.",
	      .labels = {"reason"},
	      .nlabels = 1}},
	};
	static const char *const paths[] = {LG_SPAWN_PATH_POOL, LG_SPAWN_PATH_RESTORE,
					    LG_SPAWN_PATH_BOOT};

	for (size_t i = 0; i < ARRAY_SIZE(table); i++) {
		int r = lg_metrics_register(m, &table[i].desc, table[i].slot, err);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < ARRAY_SIZE(paths); i++)
		lg_metric_child(s.spawn_seconds, &paths[i]);
	if (out != NULL)
		*out = s;
	return 0;
}
