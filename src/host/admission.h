/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Admission: how many VMs, vCPUs and MiB of memory the sandboxes of one
 * server may hold at once.  Every VM is counted when it is created, by
 * lg_sandbox_create() itself, so no front end (a registered sandbox, a
 * one-shot run, a future pool) can boot around it.
 */
#ifndef LG_HOST_ADMISSION_H
#define LG_HOST_ADMISSION_H

#include "common/err.h"

#include <stdint.h>

struct lg_admission_limits {
	unsigned max_vms;	 /* 0: LG_ADMISSION_DEFAULT_VMS */
	unsigned max_vcpus;	 /* 0: LG_ADMISSION_VCPUS_PER_CPU x online CPUs */
	uint64_t max_memory_mib; /* 0: half of the host's memory */
};

#define LG_ADMISSION_DEFAULT_VMS   16u
#define LG_ADMISSION_VCPUS_PER_CPU 4u

/* A VM's cost in the budget. */
struct lg_admission_cost {
	unsigned vcpus;
	uint64_t memory_mib; /* guest RAM plus what the VMM may use on top */
};

struct lg_admission;

/* Copies |l|; zero fields get the defaults above. */
struct lg_admission *lg_admission_new(const struct lg_admission_limits *l);
void lg_admission_free(struct lg_admission *a);

/*
 * Takes c out of the budget, or fails with -EAGAIN and a message naming
 * the budget that is full (and what holds it).  Thread-safe.
 */
int lg_admission_reserve(struct lg_admission *a, const struct lg_admission_cost *c,
			 struct lg_err **err);
/* Gives back what lg_admission_reserve() took.  Thread-safe. */
void lg_admission_release(struct lg_admission *a, const struct lg_admission_cost *c);

struct lg_admission_usage {
	unsigned vms, vcpus;
	uint64_t memory_mib;
	struct lg_admission_limits limit; /* with the defaults resolved */
};
void lg_admission_usage(struct lg_admission *a, struct lg_admission_usage *out);

#endif
