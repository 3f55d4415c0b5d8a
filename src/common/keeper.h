/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fork() on a thread that lives as long as the process.
 *
 * PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, not
 * the process.  The MCP server boots VMs on short-lived worker threads; a
 * VMM forked there would be killed the moment its worker returned.  Forking
 * on one long-lived "keeper" thread makes the death signal mean what we
 * want: the VMM dies when luminaguard dies, and not before.
 */
#ifndef LG_COMMON_KEEPER_H
#define LG_COMMON_KEEPER_H

#include <sys/types.h>

/*
 * Forks on the keeper thread.  In the child, child_fn(arg) runs and must
 * not return (it execs or _exits).  Returns the child's pid, or -errno.
 * Blocks until the fork is done; arg only needs to live that long.
 */
pid_t lg_keeper_fork(void (*child_fn)(void *arg), void *arg);

/*
 * Like lg_keeper_fork(), with clone(2) flags (CLONE_NEW*; SIGCHLD is
 * added): the child starts in new namespaces.  Fork semantics: the child
 * gets a copy of the address space and of every fd.
 */
pid_t lg_keeper_clone(unsigned long flags, void (*child_fn)(void *arg), void *arg);

#endif
