/* SPDX-License-Identifier: Apache-2.0 */
/* Admission: every budget (VMs, vCPUs, memory) refuses past its limit, and gives back exactly. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "host/admission.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static int reserve(struct lg_admission *a, unsigned vcpus, uint64_t mib, char **msg)
{
	struct lg_admission_cost c = {.vcpus = vcpus, .memory_mib = mib};
	struct lg_err *err = NULL;
	int r = lg_admission_reserve(a, &c, &err);

	if (msg != NULL)
		*msg = err != NULL ? strdup(err->msg) : NULL;
	lg_err_free(&err);
	return r;
}

static void release(struct lg_admission *a, unsigned vcpus, uint64_t mib)
{
	struct lg_admission_cost c = {.vcpus = vcpus, .memory_mib = mib};
	lg_admission_release(a, &c);
}

static void test_vm_limit(void **state)
{
	struct lg_admission *a = lg_admission_new(&(struct lg_admission_limits){
	    .max_vms = 2, .max_vcpus = 100, .max_memory_mib = 100000});
	char *msg;

	assert_int_equal(reserve(a, 1, 100, NULL), 0);
	assert_int_equal(reserve(a, 1, 100, NULL), 0);
	assert_int_equal(reserve(a, 1, 100, &msg), -EAGAIN);
	assert_non_null(strstr(msg, "limit of 2 sandboxes"));
	free(msg);
	release(a, 1, 100);
	assert_int_equal(reserve(a, 1, 100, NULL), 0);
	lg_admission_free(a);
}

static void test_vcpu_and_memory_budgets(void **state)
{
	struct lg_admission *a = lg_admission_new(
	    &(struct lg_admission_limits){.max_vms = 10, .max_vcpus = 4, .max_memory_mib = 1000});
	struct lg_admission_usage u;
	char *msg;

	assert_int_equal(reserve(a, 3, 400, NULL), 0);
	assert_int_equal(reserve(a, 2, 100, &msg), -EAGAIN);
	assert_non_null(strstr(msg, "vCPUs"));
	free(msg);
	assert_int_equal(reserve(a, 1, 601, &msg), -EAGAIN);
	assert_non_null(strstr(msg, "memory budget of 1000 MiB"));
	free(msg);
	/* a refusal takes nothing */
	lg_admission_usage(a, &u);
	assert_int_equal(u.vms, 1);
	assert_int_equal(u.vcpus, 3);
	assert_int_equal(u.memory_mib, 400);
	assert_int_equal(reserve(a, 1, 600, NULL), 0);
	release(a, 3, 400);
	release(a, 1, 600);
	lg_admission_usage(a, &u);
	assert_int_equal(u.vms + u.vcpus + u.memory_mib, 0);
	/* a single VM larger than the whole budget */
	assert_int_equal(reserve(a, 5, 1, NULL), -EAGAIN);
	assert_int_equal(reserve(a, 1, 1001, NULL), -EAGAIN);
	lg_admission_free(a);
}

static void test_defaults(void **state)
{
	struct lg_admission *a = lg_admission_new(&(struct lg_admission_limits){0});
	struct lg_admission_usage u;

	lg_admission_usage(a, &u);
	assert_int_equal(u.limit.max_vms, LG_ADMISSION_DEFAULT_VMS);
	assert_true(u.limit.max_vcpus >= LG_ADMISSION_VCPUS_PER_CPU);
	assert_true(u.limit.max_memory_mib > 0);
	lg_admission_free(a);
}

#define THREADS 8
#define ROUNDS	2000

static void *churn(void *arg)
{
	struct lg_admission *a = arg;

	for (int i = 0; i < ROUNDS; i++)
		if (reserve(a, 2, 300, NULL) == 0)
			release(a, 2, 300);
	return NULL;
}

/* Under contention the limits hold and everything comes back. */
static void *watch(void *arg)
{
	struct lg_admission *a = arg;
	struct lg_admission_usage u;

	for (int i = 0; i < ROUNDS; i++) {
		lg_admission_usage(a, &u);
		if (u.vms > u.limit.max_vms || u.vcpus > u.limit.max_vcpus ||
		    u.memory_mib > u.limit.max_memory_mib)
			return (void *)1;
	}
	return NULL;
}

static void test_threads(void **state)
{
	struct lg_admission *a = lg_admission_new(
	    &(struct lg_admission_limits){.max_vms = 3, .max_vcpus = 5, .max_memory_mib = 1000});
	pthread_t t[THREADS], w;
	struct lg_admission_usage u;
	void *bad;

	pthread_create(&w, NULL, watch, a);
	for (int i = 0; i < THREADS; i++)
		pthread_create(&t[i], NULL, churn, a);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	pthread_join(w, &bad);
	assert_null(bad);
	lg_admission_usage(a, &u);
	assert_int_equal(u.vms + u.vcpus + u.memory_mib, 0);
	lg_admission_free(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_vm_limit),
	    cmocka_unit_test(test_vcpu_and_memory_budgets),
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_threads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
