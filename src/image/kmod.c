/* SPDX-License-Identifier: Apache-2.0 */
#include "image/kmod.h"

#include "common/err.h"
#include "common/util.h"

#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <lzma.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The biggest Debian module is a few MiB; anything far larger is suspect. */
#define KMOD_MAX_SIZE (64u << 20)
/* Nesting under lib/modules/<version>/kernel is about 6 deep. */
#define KMOD_MAX_DEPTH 16

char *lg_kmod_normalize(const char *name)
{
	char *s = xstrdup(name);
	for (char *p = s; *p; p++)
		if (*p == '-')
			*p = '_';
	return s;
}

bool lg_kmod_name_valid(const char *name)
{
	size_t n = 0;

	for (const char *p = name; *p; p++, n++) {
		char ch = *p;
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '_' || ch == '-'))
			return false;
	}
	return n >= 1 && n <= LG_KMOD_NAME_MAX;
}

/* Locates the .modinfo section: *sec and *sec_len on success, 0 with *sec NULL if absent. */
static int find_modinfo(const uint8_t *p, size_t len, const uint8_t **sec, size_t *sec_len,
			struct lg_err **err)
{
	const Elf64_Ehdr *eh = (const Elf64_Ehdr *)p;
	Elf64_Ehdr ehc;
	Elf64_Shdr strsh;
	uint64_t shtab_size;

	*sec = NULL;
	*sec_len = 0;
	if (len < sizeof(Elf64_Ehdr) || memcmp(p, ELFMAG, SELFMAG) != 0)
		return lg_err_msg(err, ENOEXEC, "not an ELF file");
	/* Copy the header: data need not be aligned for Elf64_Ehdr. */
	memcpy(&ehc, eh, sizeof(ehc));
	if (ehc.e_ident[EI_CLASS] != ELFCLASS64 || ehc.e_ident[EI_DATA] != ELFDATA2LSB)
		return lg_err_msg(err, ENOEXEC, "not a 64-bit little-endian ELF file");
	if (ehc.e_type != ET_REL)
		return lg_err_msg(err, ENOEXEC, "not a kernel module (ELF type %u, want ET_REL)",
				  ehc.e_type);
	if (ehc.e_shentsize != sizeof(Elf64_Shdr) || ehc.e_shnum == 0)
		return lg_err_msg(err, ENOEXEC, "malformed ELF: bad section header table");
	if (ehc.e_shstrndx == SHN_UNDEF || ehc.e_shstrndx >= ehc.e_shnum)
		return lg_err_msg(err, ENOEXEC, "malformed ELF: bad section name table index");
	shtab_size = (uint64_t)ehc.e_shnum * sizeof(Elf64_Shdr);
	if (ehc.e_shoff > len || shtab_size > len - ehc.e_shoff)
		return lg_err_msg(err, ENOEXEC,
				  "malformed ELF: section headers lie outside the file");
	memcpy(&strsh, p + ehc.e_shoff + (uint64_t)ehc.e_shstrndx * sizeof(Elf64_Shdr),
	       sizeof(strsh));
	if (strsh.sh_type == SHT_NOBITS || strsh.sh_offset > len ||
	    strsh.sh_size > len - strsh.sh_offset)
		return lg_err_msg(err, ENOEXEC,
				  "malformed ELF: section name table lies outside the file");
	for (unsigned i = 0; i < ehc.e_shnum; i++) {
		static const char want[] = ".modinfo";
		Elf64_Shdr sh;

		memcpy(&sh, p + ehc.e_shoff + (uint64_t)i * sizeof(Elf64_Shdr), sizeof(sh));
		if (sh.sh_name >= strsh.sh_size || strsh.sh_size - sh.sh_name < sizeof(want) ||
		    memcmp(p + strsh.sh_offset + sh.sh_name, want, sizeof(want)) != 0)
			continue;
		if (sh.sh_type == SHT_NOBITS || sh.sh_offset > len ||
		    sh.sh_size > len - sh.sh_offset)
			return lg_err_msg(err, ENOEXEC,
					  "malformed ELF: .modinfo lies outside the file");
		*sec = p + sh.sh_offset;
		*sec_len = (size_t)sh.sh_size;
		return 0;
	}
	return 0;
}

int lg_kmod_modinfo_get(const void *data, size_t len, const char *key, char **value,
			struct lg_err **err)
{
	const uint8_t *sec;
	size_t sec_len, off = 0, klen = strlen(key);
	int r;

	*value = NULL;
	if ((r = find_modinfo(data, len, &sec, &sec_len, err)) < 0)
		return r;
	while (off < sec_len) {
		const uint8_t *s = sec + off;
		const uint8_t *nul = memchr(s, '\0', sec_len - off);
		size_t slen = nul ? (size_t)(nul - s) : sec_len - off;

		if (slen > klen && memcmp(s, key, klen) == 0 && s[klen] == '=') {
			*value = xmalloc(slen - klen);
			memcpy(*value, s + klen + 1, slen - klen - 1);
			(*value)[slen - klen - 1] = '\0';
			return 0;
		}
		off += slen + 1;
	}
	return 0;
}

int lg_kmod_parse_depends(const void *data, size_t len, char ***deps, struct lg_err **err)
{
	cleanup_free char *value = NULL;
	char **v;
	size_t n = 0;
	char *save = NULL;
	int r;

	*deps = NULL;
	if ((r = lg_kmod_modinfo_get(data, len, "depends", &value, err)) < 0)
		return r;
	v = xzalloc(sizeof(*v));
	if (value == NULL) {
		*deps = v;
		return 0;
	}
	for (char *tok = strtok_r(value, ",", &save); tok != NULL;
	     tok = strtok_r(NULL, ",", &save)) {
		if (!lg_kmod_name_valid(tok)) {
			lg_strv_free(v);
			return lg_err_msg(err, EBADMSG, "malformed module dependency `%.64s`", tok);
		}
		v = xrealloc(v, (n + 2) * sizeof(*v));
		v[n++] = lg_kmod_normalize(tok);
		v[n] = NULL;
	}
	*deps = v;
	return 0;
}

static int xz_to_mem(const uint8_t *in, size_t len, void **out, size_t *out_len,
		     struct lg_err **err)
{
	lzma_stream strm = LZMA_STREAM_INIT;
	size_t cap = len * 4 + 4096, used = 0;
	uint8_t *buf;
	lzma_ret lr;

	if (lzma_stream_decoder(&strm, UINT64_MAX, 0) != LZMA_OK)
		return lg_err_msg(err, EIO, "cannot start the xz decoder");
	buf = xmalloc(cap);
	strm.next_in = in;
	strm.avail_in = len;
	for (;;) {
		if (used == cap) {
			if (cap >= KMOD_MAX_SIZE) {
				lzma_end(&strm);
				free(buf);
				return lg_err_msg(err, EFBIG, "decompressed module is too big");
			}
			cap = cap * 2 > KMOD_MAX_SIZE ? KMOD_MAX_SIZE : cap * 2;
			buf = xrealloc(buf, cap);
		}
		strm.next_out = buf + used;
		strm.avail_out = cap - used;
		lr = lzma_code(&strm, LZMA_FINISH);
		used = cap - strm.avail_out;
		if (lr == LZMA_STREAM_END)
			break;
		if (lr != LZMA_OK) {
			lzma_end(&strm);
			free(buf);
			return lg_err_msg(err, EBADMSG, "corrupt xz data (liblzma error %d)", lr);
		}
	}
	lzma_end(&strm);
	*out = buf;
	*out_len = used;
	return 0;
}

static bool has_suffix(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && strcmp(s + a - b, suffix) == 0;
}

int lg_kmod_read(const char *path, void **data, size_t *len, struct lg_err **err)
{
	cleanup_close int fd = -1;
	cleanup_free uint8_t *buf = NULL;
	struct stat st;
	ssize_t n;
	int r;

	if (has_suffix(path, ".ko.zst") || has_suffix(path, ".ko.gz"))
		return lg_err_msg(err, ENOTSUP, "`%s` is compressed with %s; not supported", path,
				  has_suffix(path, ".zst") ? "zstd" : "gzip");
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return lg_err_sys(err, "open `%s`", path);
	if (fstat(fd, &st) < 0)
		return lg_err_sys(err, "stat `%s`", path);
	if (!S_ISREG(st.st_mode) || st.st_size <= 0 || (uint64_t)st.st_size > KMOD_MAX_SIZE)
		return lg_err_msg(err, ENOEXEC, "`%s` is not a plausible module file", path);
	buf = xmalloc((size_t)st.st_size);
	n = lg_read_all(fd, buf, (size_t)st.st_size);
	if (n < 0)
		return lg_err_set(err, (int)-n, "read `%s`", path);
	if (n != st.st_size)
		return lg_err_msg(err, EIO, "`%s` changed while being read", path);
	if (has_suffix(path, ".ko.xz")) {
		if ((r = xz_to_mem(buf, (size_t)n, data, len, err)) < 0)
			return lg_err_wrap(err, "decompress `%s`", path);
		return 0;
	}
	*data = steal_pointer(&buf);
	*len = (size_t)n;
	return 0;
}

static ssize_t find_mod(const struct lg_kmod *mods, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(mods[i].name, name) == 0)
			return (ssize_t)i;
	return -1;
}

int lg_kmod_sort(struct lg_kmod *mods, size_t n, struct lg_err **err)
{
	cleanup_free struct lg_kmod *out = xzalloc(n * sizeof(*out));
	cleanup_free bool *placed = xzalloc(n * sizeof(*placed));
	size_t done = 0;

	for (size_t i = 0; i < n; i++)
		for (char **d = mods[i].depends; d != NULL && *d != NULL; d++)
			if (find_mod(mods, n, *d) < 0)
				return lg_err_msg(err, ENOENT,
						  "module `%s` depends on `%s`, which is missing",
						  mods[i].name, *d);
	/*
	 * Kahn's algorithm, always taking the first ready module in input
	 * order, so the result is deterministic and close to what was asked.
	 */
	while (done < n) {
		size_t i;

		for (i = 0; i < n; i++) {
			bool ready = !placed[i];
			for (char **d = mods[i].depends; ready && d != NULL && *d != NULL; d++)
				ready = placed[find_mod(mods, n, *d)];
			if (ready)
				break;
		}
		if (i == n) {
			cleanup_free char *names = xstrdup("");
			for (size_t j = 0; j < n; j++) {
				if (placed[j])
					continue;
				char *t =
				    xasprintf("%s%s%s", names, *names ? ", " : "", mods[j].name);
				free(names);
				names = t;
			}
			return lg_err_msg(err, ELOOP, "module dependency cycle among: %s", names);
		}
		placed[i] = true;
		out[done++] = mods[i];
	}
	if (n > 0)
		memcpy(mods, out, n * sizeof(*out));
	return 0;
}

void lg_kmod_free(struct lg_kmod *mods, size_t n)
{
	if (mods == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		free(mods[i].name);
		free(mods[i].path);
		free(mods[i].relpath);
		lg_strv_free(mods[i].depends);
	}
	free(mods);
}

/* name -> relative path of every module file under moddir/kernel. */
struct index_entry {
	char *name;
	char *relpath; /* as found, maybe .ko.xz */
};

struct index {
	struct index_entry *e;
	size_t n, cap;
};

static void index_free(struct index *idx)
{
	for (size_t i = 0; i < idx->n; i++) {
		free(idx->e[i].name);
		free(idx->e[i].relpath);
	}
	free(idx->e);
}

static const char *const mod_suffixes[] = {".ko", ".ko.xz", ".ko.zst", ".ko.gz"};

/* Module name of a file name, or NULL if it is not a module file. */
static char *module_name_of(const char *file)
{
	for (size_t i = 0; i < ARRAY_SIZE(mod_suffixes); i++) {
		if (has_suffix(file, mod_suffixes[i])) {
			size_t n = strlen(file) - strlen(mod_suffixes[i]);
			cleanup_free char *base = xmalloc(n + 1);
			memcpy(base, file, n);
			base[n] = '\0';
			return lg_kmod_normalize(base);
		}
	}
	return NULL;
}

static int index_walk(struct index *idx, const char *moddir, const char *rel, int depth,
		      struct lg_err **err)
{
	cleanup_free char *dirpath = xasprintf("%s/%s", moddir, rel);
	DIR *d;
	struct dirent *de;
	int ret = 0;

	if (depth > KMOD_MAX_DEPTH)
		return 0;
	d = opendir(dirpath);
	if (d == NULL)
		return lg_err_sys(err, "open directory `%s`", dirpath);
	while (ret == 0 && (errno = 0, de = readdir(d)) != NULL) {
		cleanup_free char *child = NULL;
		struct stat st;
		char *name;

		if (de->d_name[0] == '.')
			continue;
		child = xasprintf("%s/%s", rel, de->d_name);
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			ret = index_walk(idx, moddir, child, depth + 1, err);
			continue;
		}
		if (!S_ISREG(st.st_mode) || (name = module_name_of(de->d_name)) == NULL)
			continue;
		if (idx->n == idx->cap) {
			idx->cap = idx->cap ? idx->cap * 2 : 256;
			idx->e = xrealloc(idx->e, idx->cap * sizeof(*idx->e));
		}
		idx->e[idx->n].name = name;
		idx->e[idx->n].relpath = steal_pointer(&child);
		idx->n++;
	}
	if (ret == 0 && errno != 0)
		ret = lg_err_sys(err, "read directory `%s`", dirpath);
	closedir(d);
	return ret;
}

/* The first match by relative path, so duplicates resolve the same way every time. */
static const char *index_find(const struct index *idx, const char *name)
{
	const char *best = NULL;

	for (size_t i = 0; i < idx->n; i++)
		if (strcmp(idx->e[i].name, name) == 0 &&
		    (best == NULL || strcmp(idx->e[i].relpath, best) < 0))
			best = idx->e[i].relpath;
	return best;
}

/* True if modules.builtin lists name (the kernel has it, no file needed). */
static bool is_builtin(const char *moddir, const char *name)
{
	cleanup_free char *path = xasprintf("%s/modules.builtin", moddir);
	cleanup_file FILE *f = fopen(path, "re");
	char line[512];

	if (f == NULL)
		return false;
	while (fgets(line, sizeof(line), f) != NULL) {
		cleanup_free char *mod = NULL;
		char *base;

		line[strcspn(line, "\n")] = '\0';
		base = strrchr(line, '/');
		mod = module_name_of(base ? base + 1 : line);
		if (mod != NULL && strcmp(mod, name) == 0)
			return true;
	}
	return false;
}

struct resolve {
	const char *moddir;
	struct index idx;
	struct lg_kmod *mods;
	size_t n, cap;
};

static int resolve_one(struct resolve *rs, const char *want, bool optional, const char *needed_by,
		       int depth, struct lg_err **err)
{
	cleanup_free char *name = NULL;
	cleanup_free void *data = NULL;
	const char *relpath;
	struct lg_kmod *m;
	char **deps = NULL;
	size_t len, rlen;
	int r;

	if (!lg_kmod_name_valid(want))
		return lg_err_msg(err, EINVAL, "invalid module name `%.64s`", want);
	if (depth > 64)
		return lg_err_msg(err, ELOOP, "module dependencies nest too deep at `%s`", want);
	name = lg_kmod_normalize(want);
	if (find_mod(rs->mods, rs->n, name) >= 0)
		return 0;
	relpath = index_find(&rs->idx, name);
	if (relpath == NULL) {
		if (optional || is_builtin(rs->moddir, name))
			return 0;
		if (needed_by != NULL)
			return lg_err_msg(err, ENOENT,
					  "module `%s` (needed by `%s`) not found under `%s`", name,
					  needed_by, rs->moddir);
		return lg_err_msg(err, ENOENT, "module `%s` not found under `%s`", name,
				  rs->moddir);
	}
	{
		cleanup_free char *path = xasprintf("%s/%s", rs->moddir, relpath);
		if ((r = lg_kmod_read(path, &data, &len, err)) < 0)
			return r;
		if ((r = lg_kmod_parse_depends(data, len, &deps, err)) < 0)
			return lg_err_wrap(err, "module `%s`", path);
		free(steal_pointer(&data));
		if (rs->n == rs->cap) {
			rs->cap = rs->cap ? rs->cap * 2 : 16;
			rs->mods = xrealloc(rs->mods, rs->cap * sizeof(*rs->mods));
		}
		m = &rs->mods[rs->n++];
		m->name = xstrdup(name);
		m->path = steal_pointer(&path);
	}
	m->depends = deps;
	m->relpath = xstrdup(relpath);
	rlen = strlen(m->relpath);
	if (has_suffix(m->relpath, ".ko.xz"))
		m->relpath[rlen - 3] = '\0';
	/* m may move as the array grows; deps (now owned by it) does not. */
	for (size_t i = 0; deps[i] != NULL; i++)
		if ((r = resolve_one(rs, deps[i], false, name, depth + 1, err)) < 0)
			return r;
	return 0;
}

int lg_kmod_resolve(const char *moddir, const char *const *required, const char *const *optional,
		    struct lg_kmod **mods, size_t *n, struct lg_err **err)
{
	struct resolve rs = {.moddir = moddir};
	int r = 0;

	*mods = NULL;
	*n = 0;
	r = index_walk(&rs.idx, moddir, "kernel", 0, err);
	for (size_t i = 0; r == 0 && required != NULL && required[i] != NULL; i++)
		r = resolve_one(&rs, required[i], false, NULL, 0, err);
	for (size_t i = 0; r == 0 && optional != NULL && optional[i] != NULL; i++)
		r = resolve_one(&rs, optional[i], true, NULL, 0, err);
	if (r == 0)
		r = lg_kmod_sort(rs.mods, rs.n, err);
	index_free(&rs.idx);
	if (r < 0) {
		lg_kmod_free(rs.mods, rs.n);
		return r;
	}
	*mods = rs.mods;
	*n = rs.n;
	return 0;
}
