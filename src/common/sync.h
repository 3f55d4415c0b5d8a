/* SPDX-License-Identifier: Apache-2.0 */
/* Condition-variable waits on the monotonic clock (a wall-clock step must not end or stretch them).
 */
#ifndef LG_COMMON_SYNC_H
#define LG_COMMON_SYNC_H

#include <pthread.h>

/* A condition variable on CLOCK_MONOTONIC, and a wait of at most ms on it. */
void lg_cond_init_mono(pthread_cond_t *c);
void lg_cond_wait_ms(pthread_cond_t *c, pthread_mutex_t *m, unsigned ms);

#endif
