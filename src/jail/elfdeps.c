/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ELF dependency resolution for the jail's empty root.
 *
 * The input is a file on the host (the VMM binary and the libraries it
 * names), so the parser treats every byte as untrusted: every offset, size
 * and string is checked against the file before use, counts are capped, and
 * a file that is not what we expect is an error, never a crash.  Only
 * ELF64 little-endian x86_64 is accepted: that is what the jail runs, and
 * refusing the rest keeps the parser small.
 */
#include "jail/elfdeps.h"

#include "common/util.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_PHDRS      512
#define MAX_DYN	       4096
#define MAX_STRTAB     (16u << 20)
#define MAX_FILES      1024
#define MAX_CONF_DEPTH 8
#define DEFAULT_LDCONF "/etc/ld.so.conf"

static const char *const default_dirs[] = {
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
};

struct strv {
	char **v;
	size_t n;
};

static bool strv_has(const struct strv *s, const char *x)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->v[i], x) == 0)
			return true;
	return false;
}

static void strv_add(struct strv *s, const char *x)
{
	s->v = xrealloc(s->v, (s->n + 1) * sizeof(char *));
	s->v[s->n++] = xstrdup(x);
}

static void strv_add_unique(struct strv *s, const char *x)
{
	if (!strv_has(s, x))
		strv_add(s, x);
}

static void strv_free(struct strv *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
	*s = (struct strv){0};
}

/* What one ELF file says about its loading. */
struct elf_info {
	char *interp;	    /* PT_INTERP, or NULL */
	struct strv needed; /* DT_NEEDED in order */
	char *rpath;	    /* DT_RPATH, or NULL */
	char *runpath;	    /* DT_RUNPATH, or NULL */
};

static void elf_info_free(struct elf_info *e)
{
	free(e->interp);
	strv_free(&e->needed);
	free(e->rpath);
	free(e->runpath);
	*e = (struct elf_info){0};
}

/* A NUL-terminated string at off in a table of n bytes, or NULL. */
static const char *table_str(const char *tab, uint64_t n, uint64_t off)
{
	if (off >= n || memchr(tab + off, '\0', n - off) == NULL)
		return NULL;
	return tab + off;
}

/* Checks the ELF header: 0, -ENOEXEC (not ELF), or -EINVAL (another kind of ELF). */
static int check_ehdr(const Elf64_Ehdr *eh, const char **why)
{
	if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0) {
		*why = "not an ELF file";
		return -ENOEXEC;
	}
	if (eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_ident[EI_DATA] != ELFDATA2LSB ||
	    eh->e_machine != EM_X86_64) {
		*why = "not a 64-bit little-endian x86_64 ELF file (the only kind supported)";
		return -EINVAL;
	}
	if (eh->e_type != ET_EXEC && eh->e_type != ET_DYN) {
		*why = "not an executable or shared object";
		return -EINVAL;
	}
	return 0;
}

/* Does path look like a library ld.so could load for us (right class and machine)? */
static bool elf_compatible(const char *path)
{
	Elf64_Ehdr eh;
	const char *why;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	bool ok;

	if (fd < 0)
		return false;
	ok = lg_read_all(fd, &eh, sizeof(eh)) == (ssize_t)sizeof(eh) && check_ehdr(&eh, &why) == 0;
	close(fd);
	return ok;
}

/* The file offset of virtual address v, through the PT_LOAD segments. */
static int vaddr_to_off(const Elf64_Phdr *ph, size_t n, uint64_t v, uint64_t *off)
{
	for (size_t i = 0; i < n; i++) {
		if (ph[i].p_type != PT_LOAD)
			continue;
		if (v >= ph[i].p_vaddr && v - ph[i].p_vaddr < ph[i].p_filesz) {
			*off = ph[i].p_offset + (v - ph[i].p_vaddr);
			return 0;
		}
	}
	return -EINVAL;
}

static int elf_read(const char *path, struct elf_info *out, struct lg_err **err)
{
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	cleanup_free Elf64_Phdr *ph = NULL;
	cleanup_free Elf64_Dyn *dyn = NULL;
	cleanup_free char *strtab = NULL;
	uint64_t strtab_va = 0, strsz = 0, rpath = UINT64_MAX, runpath = UINT64_MAX;
	uint64_t strtab_off, fsize;
	const Elf64_Phdr *dynph = NULL;
	size_t ndyn = 0;
	Elf64_Ehdr eh;
	struct stat st;
	const char *why;
	int r;

	*out = (struct elf_info){0};
	if (fd < 0)
		return lg_err_sys(err, "open %s", path);
	if (fstat(fd, &st) < 0)
		return lg_err_sys(err, "stat %s", path);
	if (!S_ISREG(st.st_mode))
		return lg_err_set(err, EINVAL, "%s: not a regular file", path);
	fsize = (uint64_t)st.st_size;
	r = lg_pread_exact(fd, &eh, sizeof(eh), 0, fsize);
	if (r < 0)
		return lg_err_msg(err, EINVAL, "%s: truncated or not an ELF file", path);
	r = check_ehdr(&eh, &why);
	if (r < 0)
		return lg_err_msg(err, -r, "%s: %s", path, why);
	if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 || eh.e_phnum > MAX_PHDRS)
		return lg_err_msg(err, EINVAL, "%s: bad program header table", path);
	ph = xmalloc(eh.e_phnum * sizeof(*ph));
	r = lg_pread_exact(fd, ph, eh.e_phnum * sizeof(*ph), eh.e_phoff, fsize);
	if (r < 0)
		return lg_err_msg(err, EINVAL, "%s: program header table outside the file", path);

	for (size_t i = 0; i < eh.e_phnum; i++) {
		if (ph[i].p_type == PT_INTERP && out->interp == NULL) {
			char buf[PATH_MAX];
			if (ph[i].p_filesz < 2 || ph[i].p_filesz > sizeof(buf) ||
			    lg_pread_exact(fd, buf, ph[i].p_filesz, ph[i].p_offset, fsize) < 0 ||
			    buf[ph[i].p_filesz - 1] != '\0' || buf[0] != '/' ||
			    strlen(buf) != ph[i].p_filesz - 1) {
				r = lg_err_msg(err, EINVAL, "%s: bad PT_INTERP", path);
				goto fail;
			}
			out->interp = xstrdup(buf);
		} else if (ph[i].p_type == PT_DYNAMIC && dynph == NULL) {
			dynph = &ph[i];
		}
	}
	if (dynph == NULL)
		return 0; /* static: needs nothing */

	ndyn = dynph->p_filesz / sizeof(Elf64_Dyn);
	if (ndyn == 0 || ndyn > MAX_DYN) {
		r = lg_err_msg(err, EINVAL, "%s: bad PT_DYNAMIC size", path);
		goto fail;
	}
	dyn = xmalloc(ndyn * sizeof(*dyn));
	if (lg_pread_exact(fd, dyn, ndyn * sizeof(*dyn), dynph->p_offset, fsize) < 0) {
		r = lg_err_msg(err, EINVAL, "%s: PT_DYNAMIC outside the file", path);
		goto fail;
	}
	for (size_t i = 0; i < ndyn && dyn[i].d_tag != DT_NULL; i++) {
		switch (dyn[i].d_tag) {
		case DT_STRTAB:
			strtab_va = dyn[i].d_un.d_ptr;
			break;
		case DT_STRSZ:
			strsz = dyn[i].d_un.d_val;
			break;
		case DT_RPATH:
			rpath = dyn[i].d_un.d_val;
			break;
		case DT_RUNPATH:
			runpath = dyn[i].d_un.d_val;
			break;
		}
	}
	if (strsz == 0 || strsz > MAX_STRTAB ||
	    vaddr_to_off(ph, eh.e_phnum, strtab_va, &strtab_off) < 0) {
		r = lg_err_msg(err, EINVAL, "%s: bad DT_STRTAB/DT_STRSZ", path);
		goto fail;
	}
	strtab = xmalloc(strsz);
	if (lg_pread_exact(fd, strtab, strsz, strtab_off, fsize) < 0) {
		r = lg_err_msg(err, EINVAL, "%s: string table outside the file", path);
		goto fail;
	}
	for (size_t i = 0; i < ndyn && dyn[i].d_tag != DT_NULL; i++) {
		if (dyn[i].d_tag != DT_NEEDED)
			continue;
		const char *s = table_str(strtab, strsz, dyn[i].d_un.d_val);
		if (s == NULL || *s == '\0' || strlen(s) >= NAME_MAX) {
			r = lg_err_msg(err, EINVAL, "%s: bad DT_NEEDED entry", path);
			goto fail;
		}
		strv_add(&out->needed, s);
	}
	if (rpath != UINT64_MAX) {
		const char *s = table_str(strtab, strsz, rpath);
		if (s == NULL) {
			r = lg_err_msg(err, EINVAL, "%s: bad DT_RPATH", path);
			goto fail;
		}
		out->rpath = xstrdup(s);
	}
	if (runpath != UINT64_MAX) {
		const char *s = table_str(strtab, strsz, runpath);
		if (s == NULL) {
			r = lg_err_msg(err, EINVAL, "%s: bad DT_RUNPATH", path);
			goto fail;
		}
		out->runpath = xstrdup(s);
	}
	return 0;
fail:
	elf_info_free(out);
	return r;
}

/* ---- ld.so.conf ---- */

static void conf_read(const char *path, struct strv *dirs, int depth);

static void conf_include(const char *conf, const char *pattern, struct strv *dirs, int depth)
{
	cleanup_free char *full = NULL;
	glob_t g;

	if (pattern[0] != '/') {
		/* ldconfig takes relative patterns relative to the including file. */
		cleanup_free char *copy = xstrdup(conf);
		char *slash = strrchr(copy, '/');
		if (slash != NULL)
			*slash = '\0';
		full = xasprintf("%s/%s", slash != NULL ? copy : ".", pattern);
		pattern = full;
	}
	if (glob(pattern, 0, NULL, &g) != 0)
		return;
	for (size_t i = 0; i < g.gl_pathc; i++)
		conf_read(g.gl_pathv[i], dirs, depth + 1);
	globfree(&g);
}

/* Directories of an ld.so.conf; missing files and odd lines are skipped, as ldconfig does. */
static void conf_read(const char *path, struct strv *dirs, int depth)
{
	cleanup_file FILE *f = NULL;
	char *line = NULL;
	size_t cap = 0;

	if (depth > MAX_CONF_DEPTH)
		return;
	f = fopen(path, "re");
	if (f == NULL)
		return;
	while (getline(&line, &cap, f) >= 0) {
		char *save = NULL, *word;

		line[strcspn(line, "#\n")] = '\0';
		word = strtok_r(line, " \t:,", &save);
		if (word == NULL)
			continue;
		if (strcmp(word, "include") == 0) {
			char *pat;
			while ((pat = strtok_r(NULL, " \t", &save)) != NULL)
				conf_include(path, pat, dirs, depth);
			continue;
		}
		if (strcmp(word, "hwcap") == 0)
			continue;
		for (; word != NULL; word = strtok_r(NULL, " \t:,", &save))
			if (word[0] == '/')
				strv_add_unique(dirs, word);
	}
	free(line);
}

/* ---- resolution ---- */

struct resolver {
	struct strv conf_dirs; /* from ld.so.conf */
	struct strv done;      /* DT_NEEDED names already resolved */
	struct lg_elf_deps *out;
	struct strv libdirs; /* for library_path */
	char *exe_rpath;     /* the executable's DT_RPATH, $ORIGIN expanded */
};

/* dir of the real file, for $ORIGIN */
static char *origin_of(const char *host_path)
{
	char *s = xstrdup(host_path);
	char *slash = strrchr(s, '/');

	if (slash == s)
		slash[1] = '\0';
	else if (slash != NULL)
		*slash = '\0';
	return s;
}

/* Expands $ORIGIN / ${ORIGIN} in a search path. */
static char *expand_origin(const char *p, const char *origin)
{
	size_t cap = strlen(p) + 1, n = 0;
	char *s = xmalloc(cap);

	while (*p) {
		const char *tok = NULL;
		if (strncmp(p, "$ORIGIN", 7) == 0)
			tok = "$ORIGIN";
		else if (strncmp(p, "${ORIGIN}", 9) == 0)
			tok = "${ORIGIN}";
		if (tok != NULL) {
			size_t ol = strlen(origin);
			cap += ol;
			s = xrealloc(s, cap);
			memcpy(s + n, origin, ol);
			n += ol;
			p += strlen(tok);
		} else {
			s[n++] = *p++;
		}
	}
	s[n] = '\0';
	return s;
}

/* Looks for name in each directory of a ':'-separated path.  New string or NULL. */
static char *search_path(const char *path, const char *name)
{
	cleanup_free char *copy = xstrdup(path);
	char *save = NULL;

	for (char *d = strtok_r(copy, ":", &save); d != NULL; d = strtok_r(NULL, ":", &save)) {
		char *cand = xasprintf("%s/%s", d, name);
		if (d[0] == '/' && elf_compatible(cand))
			return cand;
		free(cand);
	}
	return NULL;
}

static char *search_dirs(char *const *dirs, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++) {
		char *cand = xasprintf("%s/%s", dirs[i], name);
		if (elf_compatible(cand))
			return cand;
		free(cand);
	}
	return NULL;
}

static bool have_jail_path(const struct lg_elf_deps *d, const char *jail_path)
{
	for (size_t i = 0; i < d->n; i++)
		if (strcmp(d->files[i].jail_path, jail_path) == 0)
			return true;
	return false;
}

static int add_file(struct resolver *rs, const char *jail_path, char **host_out,
		    struct lg_err **err)
{
	struct lg_elf_deps *d = rs->out;
	char *host;

	if (have_jail_path(d, jail_path)) {
		*host_out = NULL;
		return 0;
	}
	if (d->n >= MAX_FILES)
		return lg_err_msg(err, E2BIG, "more than %d libraries: refusing", MAX_FILES);
	host = realpath(jail_path, NULL);
	if (host == NULL)
		return lg_err_sys(err, "realpath %s", jail_path);
	d->files = xrealloc(d->files, (d->n + 1) * sizeof(*d->files));
	d->files[d->n].jail_path = xstrdup(jail_path);
	d->files[d->n].host_path = host;
	d->n++;
	*host_out = host;
	return 0;
}

static int resolve_object(struct resolver *rs, const char *host_path, const char *who, bool is_exe,
			  struct lg_err **err);

static int resolve_needed(struct resolver *rs, const struct elf_info *e, const char *origin,
			  const char *who, struct lg_err **err)
{
	for (size_t i = 0; i < e->needed.n; i++) {
		const char *name = e->needed.v[i];
		cleanup_free char *found = NULL;
		char *host = NULL;
		int r;

		if (strv_has(&rs->done, name))
			continue;
		strv_add(&rs->done, name);
		if (strchr(name, '/') != NULL) {
			/* ld.so takes a name with a slash as a path. */
			found = xstrdup(name);
			if (found[0] != '/' || !elf_compatible(found))
				return lg_err_msg(err, ENOENT, "%s (needed by %s): not found", name,
						  who);
		}
		/* DT_RPATH counts only when there is no DT_RUNPATH, as in ld.so. */
		if (found == NULL && e->runpath == NULL) {
			if (e->rpath != NULL) {
				cleanup_free char *p = expand_origin(e->rpath, origin);
				found = search_path(p, name);
			}
			if (found == NULL && rs->exe_rpath != NULL)
				found = search_path(rs->exe_rpath, name);
		}
		if (found == NULL && e->runpath != NULL) {
			cleanup_free char *p = expand_origin(e->runpath, origin);
			found = search_path(p, name);
		}
		if (found == NULL)
			found = search_dirs(rs->conf_dirs.v, rs->conf_dirs.n, name);
		if (found == NULL)
			found = search_dirs((char *const *)default_dirs, ARRAY_SIZE(default_dirs),
					    name);
		if (found == NULL)
			return lg_err_msg(
			    err, ENOENT,
			    "library %s (needed by %s) not found in its RPATH/RUNPATH, "
			    "/etc/ld.so.conf or the default directories",
			    name, who);
		r = add_file(rs, found, &host, err);
		if (r < 0)
			return r;
		if (host == NULL)
			continue;
		{
			cleanup_free char *dir = origin_of(found);
			strv_add_unique(&rs->libdirs, dir);
		}
		r = resolve_object(rs, host, found, false, err);
		if (r < 0)
			return r;
	}
	return 0;
}

static int resolve_object(struct resolver *rs, const char *host_path, const char *who, bool is_exe,
			  struct lg_err **err)
{
	struct elf_info e;
	cleanup_free char *origin = origin_of(host_path);
	int r;

	r = elf_read(host_path, &e, err);
	if (r < 0)
		return r;
	if (is_exe) {
		if (e.interp != NULL) {
			char *host = NULL;
			r = add_file(rs, e.interp, &host, err);
			if (r < 0)
				goto out;
		}
		if (e.rpath != NULL && e.runpath == NULL)
			rs->exe_rpath = expand_origin(e.rpath, origin);
	}
	r = resolve_needed(rs, &e, origin, who, err);
out:
	elf_info_free(&e);
	return r;
}

int lg_elf_deps_resolve(const char *binary, const char *ldconf, struct lg_elf_deps *out,
			struct lg_err **err)
{
	struct resolver rs = {.out = out};
	cleanup_free char *host = NULL;
	size_t len = 0;
	int r;

	*out = (struct lg_elf_deps){0};
	host = realpath(binary, NULL);
	if (host == NULL)
		return lg_err_sys(err, "%s", binary);
	conf_read(ldconf != NULL ? ldconf : DEFAULT_LDCONF, &rs.conf_dirs, 0);
	r = resolve_object(&rs, host, binary, true, err);
	if (r < 0) {
		lg_elf_deps_free(out);
		goto done;
	}
	for (size_t i = 0; i < rs.libdirs.n; i++)
		len += strlen(rs.libdirs.v[i]) + 1;
	out->library_path = xzalloc(len + 1);
	for (size_t i = 0; i < rs.libdirs.n; i++) {
		if (i > 0)
			strcat(out->library_path, ":");
		strcat(out->library_path, rs.libdirs.v[i]);
	}
done:
	strv_free(&rs.conf_dirs);
	strv_free(&rs.done);
	strv_free(&rs.libdirs);
	free(rs.exe_rpath);
	return r;
}

void lg_elf_deps_free(struct lg_elf_deps *d)
{
	if (d == NULL)
		return;
	for (size_t i = 0; i < d->n; i++) {
		free(d->files[i].jail_path);
		free(d->files[i].host_path);
	}
	free(d->files);
	free(d->library_path);
	*d = (struct lg_elf_deps){0};
}
