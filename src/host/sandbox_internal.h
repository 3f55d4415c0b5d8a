/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What host/snapshot.c needs of a sandbox beyond sandbox.h: one op, so
 * that it never reaches into the struct (which becomes private to
 * sandbox.c).
 */
#ifndef LG_HOST_SANDBOX_INTERNAL_H
#define LG_HOST_SANDBOX_INTERNAL_H

#include "host/sandbox.h"

/*
 * Saves the VM's device state into fd (the backend's save_state: the VM
 * is paused, and stays paused for good).  The agent is dropped with it,
 * so lg_sandbox_destroy() ends the VMM without a poweroff through the
 * agent.  -EOPNOTSUPP when the backend has no snapshots.
 */
int lg_sandbox_save_state(struct lg_sandbox *sb, int fd, struct lg_err **err);

#endif
