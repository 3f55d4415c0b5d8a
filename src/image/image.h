/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The guest image store.  An image is a directory lg_images_dir()/<name>/
 * holding:
 *   vmlinux         the uncompressed ELF kernel (booted through its PVH note)
 *   initramfs.cpio  an uncompressed newc archive: lg-agent as /init,
 *                   busybox, the virtio modules, a few /etc files
 *   manifest.json   what is in it, with the size and SHA-256 of each file
 * Images are built into a hidden temporary directory and renamed into
 * place, so a reader sees either the old image or the new one, never half.
 * See docs/images.md.
 */
#ifndef LG_IMAGE_IMAGE_H
#define LG_IMAGE_IMAGE_H

#include <stdbool.h>
#include <stdint.h>

struct lg_err;

#define LG_IMAGE_DEFAULT_NAME "default"
#define LG_IMAGE_NAME_MAX     64
#define LG_IMAGE_FORMAT	      1

struct lg_image {
	char *name;
	char *dir;
	char *kernel; /* absolute path of vmlinux */
	char *initrd; /* absolute path of initramfs.cpio */
	char *kernel_version;
	char *agent;	    /* the manifest's "agent": "sha256:<hex>" of lg-agent */
	char *cmdline_hint; /* extra kernel command line from the manifest, or NULL */
	char **modules;	    /* module names in load order, NULL-terminated */
	uint64_t kernel_size;
	uint64_t initrd_size;
};

struct lg_image_build_opts {
	const char *name;	    /* default "default" */
	const char *kernel_dir;	    /* root of an extracted kernel package or "/" for the
				       host's; NULL: newest under lg_kernels_dir(), then "/" */
	const char *kernel_version; /* NULL: the only/newest one found */
	const char *agent_path;	    /* NULL: lg_find_helper("lg-agent") */
	const char *busybox_path;   /* NULL: /bin/busybox, must be a static ELF */
	/* Additional modules to include (with their dependencies), NULL-terminated; may be NULL. */
	const char *const *extra_modules;
	/* Called with one line of progress per step, e.g. for the CLI; may be NULL. */
	void (*progress)(void *data, const char *msg);
	void *progress_data;
};

/* True if name matches [a-zA-Z0-9._-]{1,64} and does not start with '.'. */
bool lg_image_name_valid(const char *name);

/*
 * Builds (or rebuilds, replacing atomically) an image.  Does not take
 * ownership of anything in opts.  On success, if out is non-NULL, *out is
 * the opened image (free with lg_image_free).
 */
int lg_image_build(const struct lg_image_build_opts *opts, struct lg_image **out,
		   struct lg_err **err);

/*
 * Quick open for every run: manifest parses, files exist with the recorded
 * sizes, vmlinux starts with ELF magic, initramfs with "070701".  Errors
 * tell the user the fix, e.g. "image 'default' not found in DIR; build it
 * with: luminaguard image build".
 */
int lg_image_open(const char *name, struct lg_image **out, struct lg_err **err);

/* Full check: lg_image_open() plus the SHA-256 of each file against the manifest. */
int lg_image_verify(const char *name, struct lg_err **err);

/* Lists image names (sorted); *names is NULL-terminated, free with lg_strv_free. */
int lg_image_list(char ***names, struct lg_err **err);

/* Removes an image.  Removing one that does not exist is an error (ENOENT). */
int lg_image_remove(const char *name, struct lg_err **err);

void lg_image_free(struct lg_image *img);

/* Frees a NULL-terminated array of strings and the strings (NULL is fine). */
void lg_strv_free(char **v);

#endif
