/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Snapshots: boot a sandbox once, save it, restore it many times
 * (docs/snapshots.md).
 *
 * A snapshot is a directory <data dir>/snapshots/<key> holding
 *   ram        the guest's RAM as the VM left it (sparse, the VM's RAM size,
 *              mode 0600: only this process reads it).  A restore never
 *              maps the file: once per process it is copied into a memfd
 *              sealed against every write, which restores map privately,
 *              so they share its pages copy-on-write and none can change
 *              them;
 *   state      the VMM's device state (QEMU's migration stream, x-ignore-shared);
 *   meta.json  the format version, the key, and the sizes and identities
 *              a restore checks before it loads anything.
 * <key> hashes everything a restore must match: the image (its manifest,
 * which holds every file's sha256, and the files' size and mtime), cpus,
 * memory, the writable layer, accelerator, backend, the VMM binary, the
 * snapshot format and the agent protocol.
 */
#ifndef LG_HOST_SNAPSHOT_H
#define LG_HOST_SNAPSHOT_H

#include "common/err.h"
#include "host/sandbox.h"

/*
 * Bump on any change to the directory's layout, meta.json or the saved
 * VM's device layout (it is in the key, so an older snapshot is rebuilt,
 * never loaded into a VMM whose devices differ).  2: the VM has the
 * network port (LG_NET_PORT_NAME).  3: the RAM file is mode 0600 and
 * restores map a sealed memfd copy of it (a build of format 2 would bind
 * this 0600 file into its restores' jails and fail).
 */
#define LG_SNAPSHOT_FORMAT 3

/*
 * Where the snapshot for o lives (it need not exist).  New string in *dir.
 * Reads the image's manifest; starts nothing.
 */
int lg_snapshot_dir(const struct lg_sandbox_opts *o, char **dir, struct lg_err **err);

/*
 * A valid snapshot directory for o in *dir (new string), building it when
 * it is missing, stale or damaged: a VM boots with its RAM in a file, its
 * agent says HELLO, its device state is saved, meta.json written and
 * everything fsynced, and the directory renamed into place whole.  Holds
 * an flock on <dir>.lock meanwhile, so concurrent calls from threads or
 * processes build once and never see a half-written snapshot.  Its VM
 * has the network port with nothing attached, whatever o says:
 * o->net, o->net_port, o->snapshot and o->hostname are
 * ignored.  The build's VM counts in o->admission while it runs.
 */
int lg_snapshot_ensure(const struct lg_sandbox_opts *o, char **dir, struct lg_err **err);

/*
 * Removes what snapshot builds that died left in DATA/snapshots (their
 * .tmp- and .old- directories, a RAM file of up to the VM's size each),
 * for every key whose lock nobody holds: a build in progress keeps its
 * own.  For `luminaguard serve`'s start.  Returns how many it removed.
 */
int lg_snapshot_sweep(void);

/* ---- for host/sandbox.c ---- */

/* Initialize with LG_SNAPSHOT_FILES_INIT: files_close may run before open. */
struct lg_snapshot_files {
	int state_fd; /* the device state, checked, at offset 0; -1 when closed */
	int lock_fd;  /* a shared flock on <dir>.lock while the files are in use, or -1 */
	int ram_fd;   /* the RAM: a sealed memfd (vm_config.ram_fd), our own dup, or -1 */
};
#define LG_SNAPSHOT_FILES_INIT                                                                     \
	{                                                                                          \
		.state_fd = -1, .lock_fd = -1, .ram_fd = -1                                        \
	}

/*
 * Checks dir against what p would start before anything loads: meta.json's
 * format and key, the RAM file's size, mode and identity, the state's size
 * and sha256.  -ESTALE with a one-line error for any mismatch (-ENOENT when
 * there is no snapshot); lg_snapshot_ensure then rebuilds it.  The RAM
 * comes as a memfd sealed with F_SEAL_SEAL, _SHRINK, _GROW and _WRITE:
 * copied from the file (sparse: only its data) the first time this
 * process opens this snapshot, then cached for the process's life, keyed
 * by the directory and the RAM file's inode and ctime; a rebuild or prune
 * of the snapshot drops the cached copy (VMs mapping it keep it alive).
 */
int lg_snapshot_open(const char *dir, const struct lg_sandbox_plan *p,
		     struct lg_snapshot_files *out, struct lg_err **err);
/* Closes the state and our RAM fd, drops the lock: after the VMM has them. */
void lg_snapshot_files_close(struct lg_snapshot_files *f);

/*
 * A new memfd holding the RAM file at ram_path, sealed as above (*fd,
 * close-on-exec; the file is read with O_NOFOLLOW).  What lg_snapshot_open
 * caches; for benchmarks that restore from files of their own.
 */
int lg_snapshot_ram_memfd(const char *ram_path, int *fd, struct lg_err **err);

#endif
