/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The read-only root file system of an image (issue 9): a Debian root
 * built with mmdebstrap, or a user's rootfs tarball, turned into the erofs
 * file `rootfs.erofs` that QEMU opens read-only.  See docs/images.md
 * "Building a root file system".
 */
#ifndef LG_IMAGE_ROOTFS_H
#define LG_IMAGE_ROOTFS_H

#include <stdbool.h>
#include <stdint.h>

struct lg_err;
struct lg_image_spec;

struct lg_rootfs_stats {
	uint64_t entries, bytes, skipped_special, setid_cleared;
	unsigned packages; /* installed packages per var/lib/dpkg/status ("install ok installed"), 0
			      if none */
	bool owners_kept;  /* false: every file belongs to root (no subordinate ids) */
	uint64_t image_size; /* bytes of the erofs file */
};

struct lg_rootfs_opts {
	const char *compress; /* "lz4hc" (NULL = default) or "none" */
	void (*progress)(void *data, const char *msg);
	void *progress_data;
};

/* A root file system tarball (plain, gzip, xz or zstd: told by magic bytes, not the name) -> an
 * erofs image at out_path (mode 0644, created new).  work_dir: a path that does not exist yet, on
 * the same file system as out_path, for the extracted tree; it is removed before return, success or
 * failure. On failure out_path does not exist.  Errors are one line naming the entry or the step.
 */
int lg_rootfs_from_tar(const char *tar_path, const char *work_dir, const char *out_path,
		       const struct lg_rootfs_opts *o, struct lg_rootfs_stats *st,
		       struct lg_err **err);

struct lg_debian_opts {
	const char *suite; /* NULL: the host's VERSION_CODENAME from /etc/os-release */
	const char *const
	    *packages; /* NULL-terminated, may be NULL; ca-certificates is always added */
	const struct lg_image_spec *spec; /* its files and run commands, may be NULL */
	void (*progress)(void *data, const char *msg);
	void *progress_data;
};

/* Builds a minimal Debian root with mmdebstrap into a tar at tar_path (created new). */
int lg_rootfs_debian(const struct lg_debian_opts *o, const char *tar_path, struct lg_err **err);

/* The host's release codename (new string) or NULL. */
char *lg_host_suite(void);

#endif
