/* SPDX-License-Identifier: Apache-2.0 */
#include "common/keeper.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/syscall.h>
#include <unistd.h>

struct job {
	void (*fn)(void *arg);
	void *arg;
	unsigned long clone_flags; /* 0: plain fork() */
	pid_t result;
	bool done;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int start_error;
static struct job *queued; /* at most one: callers take turns under `lock` */

static void *keeper_main(void *unused)
{
	pthread_mutex_lock(&lock);
	for (;;) {
		while (queued == NULL)
			pthread_cond_wait(&cond, &lock);
		struct job *j = queued;
		/*
		 * Namespaces need clone(); raw, with fork semantics (no stack, no
		 * CLONE_VM).  glibc's atfork handlers do not run, which is fine:
		 * the child calls only async-signal-safe functions anyway.
		 */
		pid_t pid =
		    j->clone_flags != 0
			? (pid_t)syscall(SYS_clone, j->clone_flags | SIGCHLD, NULL, NULL, NULL, 0)
			: fork();
		if (pid == 0)
			j->fn(j->arg); /* does not return */
		j->result = pid < 0 ? -errno : pid;
		j->done = true;
		queued = NULL;
		pthread_cond_broadcast(&cond);
	}
	return NULL;
}

static void start_keeper(void)
{
	pthread_attr_t attr;
	pthread_t t;

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	start_error = pthread_create(&t, &attr, keeper_main, NULL);
	pthread_attr_destroy(&attr);
}

pid_t lg_keeper_fork(void (*child_fn)(void *arg), void *arg)
{
	return lg_keeper_clone(0, child_fn, arg);
}

pid_t lg_keeper_clone(unsigned long flags, void (*child_fn)(void *arg), void *arg)
{
	struct job j = {.fn = child_fn, .arg = arg, .clone_flags = flags};

	pthread_once(&once, start_keeper);
	if (start_error != 0)
		return -start_error;
	pthread_mutex_lock(&lock);
	while (queued != NULL)
		pthread_cond_wait(&cond, &lock);
	queued = &j;
	pthread_cond_broadcast(&cond);
	while (!j.done)
		pthread_cond_wait(&cond, &lock);
	pthread_mutex_unlock(&lock);
	return j.result;
}
