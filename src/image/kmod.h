/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Kernel modules for the initramfs: finds them in an extracted kernel tree
 * (lib/modules/<version>), reads each one's dependencies from the
 * "depends=" string of its ELF .modinfo section, and puts them in load
 * order.  Distribution packages ship no modules.dep, and depmod is not
 * needed for this.  Module files are parsed as untrusted input: every
 * offset is bounds-checked.
 */
#ifndef LG_IMAGE_KMOD_H
#define LG_IMAGE_KMOD_H

#include <stdbool.h>
#include <stddef.h>

struct lg_err;

/* Longest module name the kernel accepts (MODULE_NAME_LEN - 1). */
#define LG_KMOD_NAME_MAX 55

struct lg_kmod {
	char *name;	/* normalized: '-' replaced by '_' */
	char *path;	/* host path of the module file (may end in .ko.xz) */
	char *relpath;	/* where it goes under lib/modules/<version>/, always ending .ko */
	char **depends; /* NULL-terminated normalized names of its dependencies */
};

/* Copies name with '-' replaced by '_', the kernel's own equivalence. */
char *lg_kmod_normalize(const char *name);

/* True when name is a plausible module name: [A-Za-z0-9_-], 1..55 chars. */
bool lg_kmod_name_valid(const char *name);

/*
 * Finds key in the .modinfo section of the ELF64 module data[0..len) and
 * returns a copy of its value in *value (NULL when the key is absent).
 * Returns 0, or negative with *err set when the ELF is malformed.
 */
int lg_kmod_modinfo_get(const void *data, size_t len, const char *key, char **value,
			struct lg_err **err);

/*
 * Parses the dependencies of a module image: *deps gets a NULL-terminated
 * array of normalized names (possibly empty), freed with lg_strv_free() (common/util.h).
 */
int lg_kmod_parse_depends(const void *data, size_t len, char ***deps, struct lg_err **err);

/*
 * Reads a module file into memory, decompressing .ko.xz.  *data is freed
 * with free().  Other compressions (.ko.zst, .ko.gz) are an error.
 */
int lg_kmod_read(const char *path, void **data, size_t *len, struct lg_err **err);

/*
 * Orders mods[0..n) in place so that every module comes after the modules
 * it depends on; otherwise the input order is kept.  Each dependency must be
 * one of the n modules.  A cycle is an error naming the modules in it.
 */
int lg_kmod_sort(struct lg_kmod *mods, size_t n, struct lg_err **err);

/*
 * Resolves modules for the tree moddir (e.g. ROOT/lib/modules/6.1.0-56-cloud-amd64):
 * every name in required (must exist, unless built into the kernel per
 * modules.builtin), every name in optional that exists, and all of their
 * dependencies, in load order.  Either list may be NULL; both are
 * NULL-terminated.  On success *mods (free with lg_kmod_free) and *n are set.
 */
int lg_kmod_resolve(const char *moddir, const char *const *required, const char *const *optional,
		    struct lg_kmod **mods, size_t *n, struct lg_err **err);

void lg_kmod_free(struct lg_kmod *mods, size_t n);

#endif
