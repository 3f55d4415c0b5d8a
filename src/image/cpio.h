/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Writer for "newc" cpio archives (magic "070701"), the format the kernel
 * unpacks into its initramfs.  Every entry is owned by 0:0 with mtime 0 and
 * inode numbers are handed out in order, so the same inputs give the same
 * bytes.  The kernel does not create missing parent directories while
 * unpacking, so the writer adds each missing parent (mode 0755) before an
 * entry.  Paths are given absolute ("/bin/sh") and stored without the
 * leading slash, as the kernel's own gen_init_cpio does.
 */
#ifndef LG_IMAGE_CPIO_H
#define LG_IMAGE_CPIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct lg_err;
struct lg_cpio;

/* Starts an archive written to fd.  Does not take ownership of fd. */
struct lg_cpio *lg_cpio_new(int fd);

/*
 * Each adder returns 0, or negative with *err set.  mode holds permission
 * bits only (07777); the file type comes from the function.  A path must be
 * absolute, have no "." or ".." components, no empty components, and must
 * not have been added before.
 */
int lg_cpio_add_dir(struct lg_cpio *c, const char *path, mode_t mode, struct lg_err **err);
int lg_cpio_add_data(struct lg_cpio *c, const char *path, mode_t mode, const void *data, size_t len,
		     struct lg_err **err);
/* Copies the contents of the regular file host_path. */
int lg_cpio_add_file(struct lg_cpio *c, const char *path, mode_t mode, const char *host_path,
		     struct lg_err **err);
int lg_cpio_add_symlink(struct lg_cpio *c, const char *path, const char *target,
			struct lg_err **err);
int lg_cpio_add_chardev(struct lg_cpio *c, const char *path, mode_t mode, unsigned major,
			unsigned minor, struct lg_err **err);

/* Writes the TRAILER!!! entry.  Returns 0, or negative with *err set. */
int lg_cpio_finish(struct lg_cpio *c, struct lg_err **err);

/* Bytes written so far. */
uint64_t lg_cpio_size(const struct lg_cpio *c);

void lg_cpio_free(struct lg_cpio *c);

#endif
