/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One cgroup per VM, on cgroup v2 (unified) or v1 (one directory per
 * controller), with memory, pids and CPU limits.  Lives under
 * <controller root>/luminaguard/<name>; removed when the VM ends.
 */
#ifndef LG_JAIL_CGROUP_H
#define LG_JAIL_CGROUP_H

#include "common/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LG_CGROUP_MAX_PROCS_FDS 4

struct lg_cgroup_limits {
	uint64_t memory_bytes; /* 0 = no limit */
	unsigned pids_max;     /* 0 = no limit */
	unsigned cpus;	       /* quota in whole CPUs, 0 = no limit */
};

enum lg_cgroup_version { LG_CGROUP_NONE = 0, LG_CGROUP_V1 = 1, LG_CGROUP_V2 = 2 };

struct lg_cgroup;

/*
 * Which cgroup version the host mounts, from a mountinfo file (NULL =
 * /proc/self/mountinfo).  Tests pass their own.
 */
enum lg_cgroup_version lg_cgroup_detect(const char *mountinfo);

/*
 * Creates the cgroup `name` ([A-Za-z0-9._-], at most 64, no "..", not
 * starting with '.' or '-') and sets the limits; a limit whose controller
 * is missing is an error.  An existing cgroup of that name is refused
 * (EEXIST).  mountinfo: NULL for the real host; tests pass a mountinfo
 * whose cgroup mount points are ordinary directories, to check what gets
 * written (interface files are then created as plain files).  On failure
 * nothing is left.
 */
int lg_cgroup_create(const char *mountinfo, const char *name, const struct lg_cgroup_limits *l,
		     struct lg_cgroup **out, struct lg_err **err);

/*
 * Open (O_WRONLY|O_CLOEXEC) fds of the cgroup.procs files; the jailed child
 * writes "0" into each to move itself in before it execs.  Returns the count.
 */
size_t lg_cgroup_procs_fds(const struct lg_cgroup *cg, int *fds, size_t max);

/* Did the memory controller kill something in this cgroup? */
bool lg_cgroup_oom_killed(const struct lg_cgroup *cg);

/*
 * Removes what luminaguard processes killed by SIGKILL left: the empty
 * cgroups vm-<pid>-<n> of pids that are gone (their VMMs died with them
 * through PDEATHSIG).  lg_cgroup_create() does the same in passing; a
 * service calls this at start so that nothing stale outlives a restart.
 * Returns how many it removed.
 */
int lg_cgroup_sweep_stale(const char *mountinfo);

/* Kills anything left inside, removes the directories, frees.  NULL ok. */
void lg_cgroup_destroy(struct lg_cgroup *cg);

#endif
