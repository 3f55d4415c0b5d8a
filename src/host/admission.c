/* SPDX-License-Identifier: Apache-2.0 */
#include "host/admission.h"

#include "common/util.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

struct lg_admission {
	pthread_mutex_t lock;
	struct lg_admission_usage u; /* what is held, and the limits */
};

static uint64_t host_memory_mib(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);

	if (pages <= 0 || size <= 0)
		return 4096; /* cannot tell: a small host's budget */
	return (uint64_t)pages * (uint64_t)size >> 20;
}

struct lg_admission *lg_admission_new(const struct lg_admission_limits *l)
{
	struct lg_admission *a = xzalloc(sizeof(*a));
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);

	pthread_mutex_init(&a->lock, NULL);
	a->u.limit = *l;
	if (a->u.limit.max_vms == 0)
		a->u.limit.max_vms = LG_ADMISSION_DEFAULT_VMS;
	/*
	 * vCPUs are threads on the host: a few per CPU still make progress
	 * (idle guests sleep), many more starve every VM at once.
	 */
	if (a->u.limit.max_vcpus == 0)
		a->u.limit.max_vcpus = LG_ADMISSION_VCPUS_PER_CPU * (unsigned)(cpus > 0 ? cpus : 1);
	/* Half the host: the rest stays for the host itself and its page cache. */
	if (a->u.limit.max_memory_mib == 0)
		a->u.limit.max_memory_mib = host_memory_mib() / 2;
	return a;
}

void lg_admission_free(struct lg_admission *a)
{
	if (a == NULL)
		return;
	pthread_mutex_destroy(&a->lock);
	free(a);
}

int lg_admission_reserve(struct lg_admission *a, const struct lg_admission_cost *c,
			 struct lg_err **err)
{
	struct lg_admission_usage *u = &a->u;
	int r = 0;

	pthread_mutex_lock(&a->lock);
	if (u->vms + 1 > u->limit.max_vms)
		r = lg_err_msg(err, EAGAIN,
			       "the limit of %u sandboxes is reached (%u running); destroy one "
			       "first",
			       u->limit.max_vms, u->vms);
	else if (c->vcpus > u->limit.max_vcpus - u->vcpus)
		r = lg_err_msg(err, EAGAIN,
			       "%u more vCPUs do not fit the budget of %u (%u in use by %u "
			       "sandboxes)",
			       c->vcpus, u->limit.max_vcpus, u->vcpus, u->vms);
	else if (c->memory_mib > u->limit.max_memory_mib - u->memory_mib)
		r = lg_err_msg(err, EAGAIN,
			       "%llu MiB more (guest and VMM) do not fit the memory budget of %llu "
			       "MiB (%llu MiB in use by %u sandboxes)",
			       (unsigned long long)c->memory_mib,
			       (unsigned long long)u->limit.max_memory_mib,
			       (unsigned long long)u->memory_mib, u->vms);
	else {
		u->vms++;
		u->vcpus += c->vcpus;
		u->memory_mib += c->memory_mib;
	}
	pthread_mutex_unlock(&a->lock);
	return r;
}

void lg_admission_release(struct lg_admission *a, const struct lg_admission_cost *c)
{
	struct lg_admission_usage *u = &a->u;

	pthread_mutex_lock(&a->lock);
	/* A release without its reserve is a bug; never wrap the counters around. */
	if (u->vms == 0 || u->vcpus < c->vcpus || u->memory_mib < c->memory_mib)
		abort();
	u->vms--;
	u->vcpus -= c->vcpus;
	u->memory_mib -= c->memory_mib;
	pthread_mutex_unlock(&a->lock);
}

void lg_admission_usage(struct lg_admission *a, struct lg_admission_usage *out)
{
	pthread_mutex_lock(&a->lock);
	*out = a->u;
	pthread_mutex_unlock(&a->lock);
}
