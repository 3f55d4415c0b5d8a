/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What a dynamically linked program needs to run in an empty root: its
 * ELF interpreter and the shared libraries it loads (DT_NEEDED, recursively),
 * resolved the way ld.so does (DT_RPATH/DT_RUNPATH with $ORIGIN, the
 * directories of /etc/ld.so.conf and its includes, the default directories).
 */
#ifndef LG_JAIL_ELFDEPS_H
#define LG_JAIL_ELFDEPS_H

#include "common/err.h"

#include <stddef.h>

struct lg_elf_file {
	char *jail_path; /* where the loader will look: dir/soname, or PT_INTERP */
	char *host_path; /* the real file (symlinks resolved) */
};

struct lg_elf_deps {
	struct lg_elf_file *files; /* interpreter first; no duplicates */
	size_t n;
	char *library_path; /* ':'-joined directories of the libraries, for LD_LIBRARY_PATH */
};

/*
 * Resolves binary's dependencies.  ldconf: NULL = /etc/ld.so.conf (tests pass
 * their own).  A static binary gives n = 0.  A library that cannot be found
 * is an error naming it.
 */
int lg_elf_deps_resolve(const char *binary, const char *ldconf, struct lg_elf_deps *out,
			struct lg_err **err);
void lg_elf_deps_free(struct lg_elf_deps *d);

#endif
