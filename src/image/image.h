/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The guest image store.  An image is a directory lg_images_dir()/<name>/
 * holding:
 *   vmlinux         the uncompressed ELF kernel (booted through its PVH note)
 *   initramfs.cpio  an uncompressed newc archive: lg-agent as /init,
 *                   busybox, the virtio modules, a few /etc files
 *   rootfs.erofs    "rootfs" images only: the read-only root file system
 *                   (erofs, lz4hc), a Debian userland or an imported tarball
 *   manifest.json   what is in it, with the size and SHA-256 of each file
 *   .verified       "rootfs" images only: the rootfs file's identity when its
 *                   SHA-256 was last checked (see lg_image_open)
 * Images are built into a hidden temporary directory and renamed into
 * place, so a reader sees either the old image or the new one, never half.
 * See docs/images.md.
 */
#ifndef LG_IMAGE_IMAGE_H
#define LG_IMAGE_IMAGE_H

#include <stdbool.h>
#include <stdint.h>

struct lg_err;
struct lg_image_spec;

#define LG_IMAGE_DEFAULT_NAME "default"
#define LG_IMAGE_NAME_MAX     64
#define LG_IMAGE_FORMAT	      2 /* written; 1 (initramfs images only) is still read */

enum lg_image_kind {
	LG_IMAGE_INITRAMFS, /* busybox in the initramfs is the whole userland */
	LG_IMAGE_ROOTFS,    /* + rootfs.erofs, mounted by the agent under an overlay */
};

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
	enum lg_image_kind kind;
	/* LG_IMAGE_ROOTFS only (NULL / 0 / empty otherwise): */
	char *rootfs; /* absolute path of rootfs.erofs */
	uint64_t rootfs_size;
	char *rootfs_sha256;	     /* hex, from the manifest */
	unsigned installed_packages; /* dpkg's count in the root, 0 for an import without dpkg */
	char **packages;	     /* what was asked for, NULL-terminated, never NULL */
	char *suite;		     /* the Debian suite, NULL for an import */
	/* Defaults for commands run in the image, from the spec file: */
	char **env;    /* "KEY=VALUE", NULL-terminated, never NULL */
	char *workdir; /* absolute, or NULL */
	char *user;    /* or NULL (root) */
	/* The command that rebuilds this image, for messages (never NULL). */
	char *rebuild;
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

	/*
	 * A "rootfs" image (rootfs.erofs) is built when packages or spec is
	 * set (a Debian root made by mmdebstrap) or import_tar is (the user's
	 * root file system tarball); otherwise an "initramfs" image.  The
	 * spec's name, suite and packages are defaults: name, suite and
	 * packages here override them.  packages and import_tar exclude each
	 * other, and so do spec and import_tar.
	 */
	const char *suite;		  /* NULL: the spec's, else the host's release */
	const char *const *packages;	  /* NULL-terminated; NULL: the spec's */
	const struct lg_image_spec *spec; /* not owned */
	const char *spec_path;		  /* where spec came from, for the rebuild command */
	const char *import_tar;		  /* plain, gzip, xz or zstd tarball */
	const char *compress;		  /* "lz4hc" (NULL) or "none" */
	/* The command recorded as the image's "rebuild"; NULL: composed from these options. */
	const char *rebuild;
	/* Polled between steps: nonzero (e.g. a caught SIGINT) abandons the build.  May be NULL. */
	int (*cancelled)(void);
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
 * sizes, vmlinux starts with ELF magic, initramfs with "070701", and
 * rootfs.erofs (rootfs images) with the erofs superblock magic.  The
 * rootfs file is also checked against its .verified stamp (device, inode,
 * size, mtime, ctime and the manifest's digest); when the stamp is missing
 * or differs, the file is hashed against the manifest (about a second per
 * 100 MiB) and the stamp rewritten if it matches.  Errors are one line
 * telling the user the fix, e.g. "image 'default' not found in DIR; build it
 * with: luminaguard image build", "image 'py' is damaged: rootfs.erofs:
 * SHA-256 differs from the manifest; rebuild it with: luminaguard image
 * build --name py --packages python3".  Takes no lock: a build holding
 * the store's lock never delays a run.
 */
int lg_image_open(const char *name, struct lg_image **out, struct lg_err **err);

/* Full check: lg_image_open() plus the SHA-256 of each file against the
 * manifest, rootfs.erofs included whatever its stamp says; refreshes the stamp. */
int lg_image_verify(const char *name, struct lg_err **err);

/* What `image list` shows: lg_image_open() (rootfs.erofs by its stamp) plus the
 * SHA-256 of vmlinux and initramfs.cpio.  On success *out is the image. */
int lg_image_check(const char *name, struct lg_image **out, struct lg_err **err);

/* "initramfs" or "rootfs". */
const char *lg_image_kind_name(enum lg_image_kind kind);

/* Lists image names (sorted); *names is NULL-terminated, free with lg_strv_free. */
int lg_image_list(char ***names, struct lg_err **err);

/* Removes an image.  Removing one that does not exist is an error (ENOENT). */
int lg_image_remove(const char *name, struct lg_err **err);

void lg_image_free(struct lg_image *img);

/* Frees a NULL-terminated array of strings and the strings (NULL is fine). */
void lg_strv_free(char **v);

#endif
