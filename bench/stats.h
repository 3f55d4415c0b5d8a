/* SPDX-License-Identifier: Apache-2.0 */
/* What every benchmark here measures with: a monotonic clock and medians. */
#ifndef LG_BENCH_STATS_H
#define LG_BENCH_STATS_H

/* CLOCK_MONOTONIC in milliseconds. */
double bench_now_ms(void);
/* The median of v[0..n); sorts v in place. */
double bench_median(double *v, int n);

#endif
