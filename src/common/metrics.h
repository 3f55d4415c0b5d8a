/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A small thread-safe Prometheus metrics registry with the text exposition
 * format 0.0.4 (docs/metrics.md).  Counters, gauges and histograms, each a
 * family with a name, help text and 0..LG_METRIC_MAX_LABELS label names;
 * one child per distinct set of label values.
 *
 * Updates are lock-free (atomics on a child); a mutex is taken only to
 * register a family, to find or create a child, and to render.  Children
 * live as long as the registry, so callers may keep a child pointer and
 * update it from any thread without further lookups.
 */
#ifndef LG_COMMON_METRICS_H
#define LG_COMMON_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define LG_METRIC_MAX_LABELS 4
/* Distinct label sets per family; past it, updates go to the overflow child. */
#define LG_METRIC_MAX_CHILDREN 1024
/* Label values longer than this (bytes) also go to the overflow child. */
#define LG_METRIC_MAX_VALUE_LEN 128
/* Every label value of the overflow child. */
#define LG_METRIC_OVERFLOW_VALUE "_other"
#define LG_METRIC_MAX_BUCKETS	 64

enum lg_metric_kind {
	LG_METRIC_COUNTER,
	LG_METRIC_GAUGE,
	LG_METRIC_HISTOGRAM,
};

struct lg_metrics;	/* the registry */
struct lg_metric;	/* a family: name, help, labels, kind */
struct lg_metric_child; /* one set of label values and its value */

struct lg_metric_desc {
	enum lg_metric_kind kind;
	const char *name; /* [a-zA-Z_:][a-zA-Z0-9_:]* */
	const char *help; /* any text; escaped on output */
	/* [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__", distinct, not "le" for histograms */
	const char *labels[LG_METRIC_MAX_LABELS];
	size_t nlabels;
	/* Histograms: bucket upper bounds, finite and strictly increasing; +Inf is implied. */
	const double *buckets;
	size_t nbuckets;
};

struct lg_metrics *lg_metrics_new(void);
/* Frees the registry, its families and children: no update may run concurrently. */
void lg_metrics_free(struct lg_metrics *m);

/*
 * Registers a family (copies the strings and buckets).  Registering one that
 * exists with the same kind, help, labels and buckets sets *out to the same
 * family; a different one with the same name is -EEXIST.  Bad names, labels or
 * buckets are -EINVAL.  The family lives as long as the registry.
 */
int lg_metrics_register(struct lg_metrics *m, const struct lg_metric_desc *d,
			struct lg_metric **out, struct lg_err **err);

/* The family registered under name, or NULL. */
struct lg_metric *lg_metrics_find(struct lg_metrics *m, const char *name);

/*
 * The child for values[0..nlabels) (values may be NULL with no labels),
 * created on first use.  Never NULL: a new label set past
 * LG_METRIC_MAX_CHILDREN, a value longer than LG_METRIC_MAX_VALUE_LEN or not
 * valid UTF-8 gets the family's overflow child, whose every value is
 * LG_METRIC_OVERFLOW_VALUE, so a hostile source of label values cannot make
 * the registry grow without bound.  Takes the family's lock; keep the
 * pointer for hot paths.
 */
struct lg_metric_child *lg_metric_child(struct lg_metric *f, const char *const *values);

/*
 * Updates.  Lock-free and allocation-free; -EINVAL (nothing changed) on a
 * child of the wrong kind, a negative or NaN counter increment, or a NaN
 * observation.
 */
int lg_metric_counter_add(struct lg_metric_child *c, uint64_t n);
int lg_metric_counter_add_f(struct lg_metric_child *c, double v);
int lg_metric_gauge_set(struct lg_metric_child *c, double v);
int lg_metric_gauge_add(struct lg_metric_child *c, double v); /* negative to decrease */
int lg_metric_observe(struct lg_metric_child *c, double v);

static inline int lg_metric_inc(struct lg_metric_child *c)
{
	return lg_metric_counter_add(c, 1);
}

/* A counter's or gauge's value, a histogram's count of observations. */
double lg_metric_value(const struct lg_metric_child *c);

/*
 * The registry in the Prometheus text format 0.0.4, as a new string (the
 * caller frees it): families sorted by name, children by label values.
 * Serve it as "Content-Type: text/plain; version=0.0.4".
 */
char *lg_metrics_render(struct lg_metrics *m);

/* A double as the exposition format writes it: "+Inf", "-Inf", "NaN", exact integers plainly. */
void lg_metrics_format_double(char *buf, size_t n, double v);

/*
 * The service's metrics (issue 10).  The names, kinds and labels are fixed
 * here so every part of the service uses exactly these; docs/metrics.md says
 * what event moves each one.  Their kinds and labels:
 * spawn_seconds: histogram {path}; pool_ready: gauge {pool}; pool_hits,
 * pool_misses: counters {pool}; sandboxes: gauge {state}; exec_seconds:
 * histogram; approvals: counter {outcome}; egress_connections: counter
 * {verdict}; vmm_exits: counter {reason}.
 */
#define LG_METRIC_SPAWN_SECONDS	     "luminaguard_spawn_seconds"
#define LG_METRIC_POOL_READY	     "luminaguard_pool_ready"
#define LG_METRIC_POOL_HITS	     "luminaguard_pool_hits_total"
#define LG_METRIC_POOL_MISSES	     "luminaguard_pool_misses_total"
#define LG_METRIC_SANDBOXES	     "luminaguard_sandboxes"
#define LG_METRIC_EXEC_SECONDS	     "luminaguard_exec_seconds"
#define LG_METRIC_APPROVALS	     "luminaguard_approvals_total"
#define LG_METRIC_EGRESS_CONNECTIONS "luminaguard_egress_connections_total"
#define LG_METRIC_VMM_EXITS	     "luminaguard_vmm_exits_total"

/* Values of luminaguard_spawn_seconds{path}. */
#define LG_SPAWN_PATH_POOL    "pool"
#define LG_SPAWN_PATH_RESTORE "restore"
#define LG_SPAWN_PATH_BOOT    "boot"

struct lg_metrics_standard {
	struct lg_metric *spawn_seconds;
	struct lg_metric *pool_ready;
	struct lg_metric *pool_hits;
	struct lg_metric *pool_misses;
	struct lg_metric *sandboxes;
	struct lg_metric *exec_seconds;
	struct lg_metric *approvals;
	struct lg_metric *egress_connections;
	struct lg_metric *vmm_exits;
};

/*
 * Registers the service's metrics (idempotent) and fills *out (may be NULL).
 * The spawn_seconds children of the three paths are created at once, so they
 * are exposed as 0 before the first spawn.
 */
int lg_metrics_register_standard(struct lg_metrics *m, struct lg_metrics_standard *out,
				 struct lg_err **err);

#endif
