/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Getting an ELF vmlinux out of a distribution vmlinuz.  QEMU boots an ELF
 * kernel with a PVH note directly (-kernel), skipping the bzImage
 * decompressor: 2.5 s instead of 6.2 s to init under TCG.
 */
#ifndef LG_IMAGE_VMLINUX_H
#define LG_IMAGE_VMLINUX_H

#include <stddef.h>

struct lg_err;

/*
 * Writes the ELF kernel held in the kernel image data[0..len) to out_fd.
 * An ELF input is copied; a bzImage's payload (or, for other inputs, the
 * first xz or lz4 stream found in it) is decompressed.  xz (Debian's
 * linux-image-amd64) and the lz4 legacy format (linux-image-cloud-amd64)
 * are supported; other compressions fail with "kernel image is compressed
 * with X; not supported".
 * Does not take ownership of out_fd.  Returns 0, or negative with *err set.
 */
int lg_vmlinux_extract_mem(const void *data, size_t len, int out_fd, struct lg_err **err);

/* The same for the file vmlinuz_path, written to a new file out_path (0644). */
int lg_vmlinux_extract(const char *vmlinuz_path, const char *out_path, struct lg_err **err);

/*
 * Checks that path is an x86-64 ELF executable with a PVH entry note
 * (XEN_ELFNOTE_PHYS32_ENTRY), which QEMU needs to boot it with -kernel.
 */
int lg_vmlinux_check(const char *path, struct lg_err **err);

#endif
