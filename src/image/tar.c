/* SPDX-License-Identifier: Apache-2.0 */
#include "image/tar.h"

#include "common/err.h"
#include "common/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define BLOCK 512

/* ustar header field offsets and lengths. */
#define H_NAME	   0
#define H_MODE	   100
#define H_UID	   108
#define H_GID	   116
#define H_MTIME	   136
#define H_SIZE	   124
#define H_CHKSUM   148
#define H_TYPE	   156
#define H_LINKNAME 157
#define H_MAGIC	   257
#define H_PREFIX   345

struct lg_tar_reader {
	lg_tar_read_fn read;
	void *ctx;
	uint64_t off;
	uint64_t left; /* data bytes of the current entry not yet read */
	uint64_t pad;  /* padding after them */
	char *path;
	char *linkname;
	uint8_t blk[BLOCK];
};

struct lg_tar_reader *lg_tar_reader_new(lg_tar_read_fn read, void *ctx)
{
	struct lg_tar_reader *r = xzalloc(sizeof(*r));

	r->read = read;
	r->ctx = ctx;
	return r;
}

void lg_tar_reader_free(struct lg_tar_reader *r)
{
	if (r == NULL)
		return;
	free(r->path);
	free(r->linkname);
	free(r);
}

uint64_t lg_tar_offset(const struct lg_tar_reader *r)
{
	return r->off;
}

/* Reads exactly n bytes; 0 if EOF came first (*got says how many), or -errno. */
static int read_exact(struct lg_tar_reader *r, void *buf, size_t n, size_t *got)
{
	size_t done = 0;

	while (done < n) {
		ssize_t k = r->read(r->ctx, (uint8_t *)buf + done, n - done);
		if (k < 0)
			return (int)k;
		if (k == 0)
			break;
		done += (size_t)k;
		r->off += (uint64_t)k;
	}
	if (got)
		*got = done;
	return done == n ? 1 : 0;
}

static int truncated(struct lg_tar_reader *r, struct lg_err **err)
{
	return lg_err_msg(err, EINVAL, "tar archive truncated at offset %llu",
			  (unsigned long long)r->off);
}

static int read_block(struct lg_tar_reader *r, struct lg_err **err)
{
	int k = read_exact(r, r->blk, BLOCK, NULL);

	if (k < 0)
		return lg_err_set(err, -k, "read tar archive");
	if (k == 0)
		return truncated(r, err);
	return 0;
}

static int skip(struct lg_tar_reader *r, uint64_t n, struct lg_err **err)
{
	uint8_t buf[4096];

	while (n > 0) {
		size_t chunk = n < sizeof(buf) ? (size_t)n : sizeof(buf);
		int k = read_exact(r, buf, chunk, NULL);
		if (k < 0)
			return lg_err_set(err, -k, "read tar archive");
		if (k == 0)
			return truncated(r, err);
		n -= chunk;
	}
	return 0;
}

static uint64_t padding(uint64_t size)
{
	return (BLOCK - (size % BLOCK)) % BLOCK;
}

/*
 * A numeric field: octal digits with leading spaces and a NUL or space end,
 * or base-256 (first byte 0x80; 0xff, negative, is refused: no size, uid or
 * mode is negative).  Returns 0 or -EINVAL, never wraps.
 */
static int parse_num(const uint8_t *f, size_t len, uint64_t *out)
{
	uint64_t v = 0;
	size_t i = 0;

	if (f[0] & 0x80) {
		if (f[0] != 0x80)
			return -EINVAL;
		for (i = 1; i < len; i++) {
			if (v >> 56)
				return -EINVAL;
			v = (v << 8) | f[i];
		}
		*out = v;
		return 0;
	}
	while (i < len && f[i] == ' ')
		i++;
	for (; i < len && f[i] >= '0' && f[i] <= '7'; i++) {
		if (v >> 61)
			return -EINVAL;
		v = (v << 3) | (uint64_t)(f[i] - '0');
	}
	/* What follows the digits must be terminators only. */
	for (; i < len; i++)
		if (f[i] != ' ' && f[i] != '\0')
			return -EINVAL;
	*out = v;
	return 0;
}

static bool block_is_zero(const uint8_t *b)
{
	for (size_t i = 0; i < BLOCK; i++)
		if (b[i])
			return false;
	return true;
}

/* Accepts the unsigned sum, and the signed one old tars wrote. */
static bool checksum_ok(const uint8_t *b)
{
	uint64_t want;
	int64_t ssum = 0;
	uint64_t usum = 0;

	if (parse_num(b + H_CHKSUM, 8, &want) < 0)
		return false;
	for (size_t i = 0; i < BLOCK; i++) {
		uint8_t c = (i >= H_CHKSUM && i < H_CHKSUM + 8) ? ' ' : b[i];
		usum += c;
		ssum += (int8_t)c;
	}
	return want == usum || (ssum >= 0 && want == (uint64_t)ssum);
}

/* Copies a name of len bytes, refusing NULs inside and overlong names. */
static int set_name(char **dst, const char *src, size_t len)
{
	if (len > LG_TAR_NAME_MAX || memchr(src, '\0', len) != NULL)
		return -EINVAL;
	free(*dst);
	*dst = xmalloc(len + 1);
	memcpy(*dst, src, len);
	(*dst)[len] = '\0';
	return 0;
}

struct pending {
	char *path; /* from 'L' or pax, overriding the header's */
	char *linkname;
	bool have_size;
	uint64_t size;
	bool have_uid, have_gid, have_mtime;
	uint64_t uid, gid, mtime;
};

static void pending_clear(struct pending *p)
{
	free(p->path);
	free(p->linkname);
	memset(p, 0, sizeof(*p));
}

static int parse_decimal(const char *s, size_t n, uint64_t *out)
{
	uint64_t v = 0;

	if (n == 0 || n > 19)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = v;
	return 0;
}

/*
 * pax records, "LEN KEY=VALUE\n" with LEN counting the whole record.  Every
 * length is checked against what is left, so a lying LEN cannot read past
 * the buffer.
 */
static int parse_pax(struct lg_tar_reader *r, const char *buf, size_t n, struct pending *p,
		     struct lg_err **err)
{
	size_t pos = 0;

	while (pos < n) {
		size_t len = 0, i = pos;
		const char *key, *eq, *val;
		size_t klen, vlen;

		while (i < n && buf[i] >= '0' && buf[i] <= '9' && i - pos < 8)
			len = len * 10 + (size_t)(buf[i++] - '0');
		/* At least "LEN k=\n": checked before pos + len - 1 is formed. */
		if (i == pos || i >= n || buf[i] != ' ' || len < i - pos + 4 || len > n - pos ||
		    buf[pos + len - 1] != '\n')
			return lg_err_msg(err, EINVAL,
					  "tar: malformed pax record in header before offset %llu",
					  (unsigned long long)r->off);
		key = buf + i + 1;
		eq = memchr(key, '=', (size_t)(buf + pos + len - 1 - key));
		if (eq == NULL || eq == key)
			return lg_err_msg(err, EINVAL,
					  "tar: malformed pax record in header before offset %llu",
					  (unsigned long long)r->off);
		klen = (size_t)(eq - key);
		val = eq + 1;
		vlen = (size_t)(buf + pos + len - 1 - val);
#define KEY_IS(s) (klen == sizeof(s) - 1 && memcmp(key, s, klen) == 0)
		if (KEY_IS("path") || KEY_IS("linkpath")) {
			char **dst = KEY_IS("path") ? &p->path : &p->linkname;
			/* An empty value cancels the override (POSIX). */
			if (vlen == 0) {
				free(*dst);
				*dst = NULL;
			} else if (set_name(dst, val, vlen) < 0) {
				return lg_err_msg(err, EINVAL,
						  "tar: pax %s is longer than %d bytes or holds a "
						  "NUL (before offset %llu)",
						  KEY_IS("path") ? "path" : "linkpath",
						  LG_TAR_NAME_MAX, (unsigned long long)r->off);
			}
		} else if (KEY_IS("size") || KEY_IS("uid") || KEY_IS("gid") || KEY_IS("mtime")) {
			uint64_t v;
			size_t ilen = vlen;

			/* mtime may have a fraction of a second, dropped here. */
			if (KEY_IS("mtime") && memchr(val, '.', vlen))
				ilen = (size_t)((const char *)memchr(val, '.', vlen) - val);
			if (parse_decimal(val, ilen, &v) < 0)
				return lg_err_msg(err, EINVAL,
						  "tar: bad pax number (before offset %llu)",
						  (unsigned long long)r->off);
			if (KEY_IS("size")) {
				p->have_size = true;
				p->size = v;
			} else if (KEY_IS("uid")) {
				p->have_uid = true;
				p->uid = v;
			} else if (KEY_IS("mtime")) {
				p->have_mtime = true;
				p->mtime = v;
			} else {
				p->have_gid = true;
				p->gid = v;
			}
		} else if (klen >= 11 && memcmp(key, "GNU.sparse.", 11) == 0) {
			/* Sparse files are refused, see tar.h. */
			return lg_err_msg(err, ENOTSUP,
					  "tar: sparse files are not supported (pax GNU.sparse "
					  "before offset %llu)",
					  (unsigned long long)r->off);
		}
#undef KEY_IS
		pos += len;
	}
	return 0;
}

/* Reads a metadata entry's data (bounded by the caller) into a new buffer. */
static int read_meta(struct lg_tar_reader *r, uint64_t size, char **out, struct lg_err **err)
{
	char *buf = xmalloc((size_t)size + 1);
	int k = read_exact(r, buf, (size_t)size, NULL);

	if (k <= 0) {
		free(buf);
		return k < 0 ? lg_err_set(err, -k, "read tar archive") : truncated(r, err);
	}
	buf[size] = '\0';
	*out = buf;
	return skip(r, padding(size), err);
}

/* The data of a GNU 'L'/'K' entry: a name, NUL-terminated (trailing NULs dropped). */
static int take_long_name(struct lg_tar_reader *r, uint64_t size, char **dst, struct lg_err **err)
{
	cleanup_free char *buf = NULL;
	size_t len;
	int ret;

	if (size > LG_TAR_NAME_MAX + 1)
		return lg_err_msg(err, EINVAL, "tar: GNU long name of %llu bytes (limit %d)",
				  (unsigned long long)size, LG_TAR_NAME_MAX);
	if ((ret = read_meta(r, size, &buf, err)) < 0)
		return ret;
	len = (size_t)size;
	while (len > 0 && buf[len - 1] == '\0')
		len--;
	if (len == 0 || set_name(dst, buf, len) < 0)
		return lg_err_msg(err, EINVAL, "tar: GNU long name is empty or holds a NUL");
	return 0;
}

int lg_tar_next(struct lg_tar_reader *r, struct lg_tar_entry *e, struct lg_err **err)
{
	struct pending p = {0};
	uint64_t meta_bytes = 0;
	unsigned meta_hdrs = 0;
	int ret;

	if ((ret = skip(r, r->left + r->pad, err)) < 0)
		return ret;
	r->left = r->pad = 0;

	for (;;) {
		const uint8_t *b = r->blk;
		uint64_t size, mode, uid, gid, mtime;
		uint64_t hdr_off = r->off;
		char type;

		if ((ret = read_block(r, err)) < 0)
			goto out;
		if (block_is_zero(b)) {
			/* The end is two zero blocks; a lone one followed by more is not. */
			if ((ret = read_block(r, err)) < 0)
				goto out;
			if (!block_is_zero(b)) {
				ret = lg_err_msg(err, EINVAL, "tar: lone zero block at offset %llu",
						 (unsigned long long)hdr_off);
				goto out;
			}
			if (p.path || p.linkname || meta_hdrs) {
				ret = lg_err_msg(err, EINVAL,
						 "tar: archive ends after an extended header");
				goto out;
			}
			ret = 0;
			goto out;
		}
		if (!checksum_ok(b)) {
			ret = lg_err_msg(err, EINVAL, "tar: bad header checksum at offset %llu",
					 (unsigned long long)hdr_off);
			goto out;
		}
		if (parse_num(b + H_SIZE, 12, &size) < 0 || parse_num(b + H_MODE, 8, &mode) < 0 ||
		    parse_num(b + H_UID, 8, &uid) < 0 || parse_num(b + H_GID, 8, &gid) < 0 ||
		    parse_num(b + H_MTIME, 12, &mtime) < 0) {
			ret = lg_err_msg(err, EINVAL, "tar: bad number in header at offset %llu",
					 (unsigned long long)hdr_off);
			goto out;
		}
		type = (char)b[H_TYPE];

		if (type == 'L' || type == 'K' || type == 'x' || type == 'g') {
			/* Bounded so a chain of extended headers cannot eat memory or time. */
			meta_bytes += size;
			if (++meta_hdrs > LG_TAR_META_HDRS || size > LG_TAR_META_MAX ||
			    meta_bytes > LG_TAR_META_MAX) {
				ret = lg_err_msg(err, EINVAL,
						 "tar: extended headers at offset %llu exceed the "
						 "limit (%d headers, %d bytes)",
						 (unsigned long long)hdr_off, LG_TAR_META_HDRS,
						 LG_TAR_META_MAX);
				goto out;
			}
			if (type == 'L' || type == 'K') {
				ret = take_long_name(r, size, type == 'L' ? &p.path : &p.linkname,
						     err);
			} else {
				cleanup_free char *buf = NULL;
				if (size > LG_TAR_PAX_MAX) {
					ret =
					    lg_err_msg(err, EINVAL,
						       "tar: pax header of %llu bytes at offset "
						       "%llu (limit %d)",
						       (unsigned long long)size,
						       (unsigned long long)hdr_off, LG_TAR_PAX_MAX);
					goto out;
				}
				ret = read_meta(r, size, &buf, err);
				/* Global headers are read for their bounds only. */
				if (ret == 0 && type == 'x')
					ret = parse_pax(r, buf, (size_t)size, &p, err);
			}
			if (ret < 0)
				goto out;
			continue;
		}

		switch (type) {
		case '0':
		case '\0':
		case '7':
			e->type = LG_TAR_FILE;
			break;
		case '1':
			e->type = LG_TAR_HARDLINK;
			break;
		case '2':
			e->type = LG_TAR_SYMLINK;
			break;
		case '5':
			e->type = LG_TAR_DIR;
			break;
		case '3':
		case '4':
		case '6':
			e->type = LG_TAR_OTHER;
			break;
		case 'S':
			ret = lg_err_msg(err, ENOTSUP,
					 "tar: sparse files are not supported (entry at offset "
					 "%llu)",
					 (unsigned long long)hdr_off);
			goto out;
		default:
			ret = lg_err_msg(err, ENOTSUP,
					 "tar: unsupported entry type 0x%02x at offset %llu",
					 (unsigned)(uint8_t)type, (unsigned long long)hdr_off);
			goto out;
		}

		if (p.path) {
			free(r->path);
			r->path = steal_pointer(&p.path);
		} else {
			char name[256 + 100];
			size_t nlen = strnlen((const char *)b + H_NAME, 100);
			size_t plen = 0;

			/* The prefix field exists in POSIX ustar only ("ustar\0"). */
			if (memcmp(b + H_MAGIC, "ustar\0", 6) == 0)
				plen = strnlen((const char *)b + H_PREFIX, 155);
			if (plen) {
				memcpy(name, b + H_PREFIX, plen);
				name[plen++] = '/';
			}
			memcpy(name + plen, b + H_NAME, nlen);
			set_name(&r->path, name, plen + nlen); /* short: cannot fail */
		}
		if (p.linkname) {
			free(r->linkname);
			r->linkname = steal_pointer(&p.linkname);
		} else {
			set_name(&r->linkname, (const char *)b + H_LINKNAME,
				 strnlen((const char *)b + H_LINKNAME, 100));
		}
		if (r->path[0] == '\0') {
			ret =
			    lg_err_msg(err, EINVAL, "tar: entry with an empty name at offset %llu",
				       (unsigned long long)hdr_off);
			goto out;
		}
		if (p.have_size)
			size = p.size;
		/* Pre-POSIX tars mark a directory with a trailing slash only. */
		if (e->type == LG_TAR_FILE && size == 0 && r->path[strlen(r->path) - 1] == '/')
			e->type = LG_TAR_DIR;
		/* No archive holds 2^62 bytes; refusing keeps offset sums from wrapping. */
		if (size >= (1ull << 62)) {
			ret =
			    lg_err_msg(err, EFBIG, "tar: entry size %llu at offset %llu is absurd",
				       (unsigned long long)size, (unsigned long long)hdr_off);
			goto out;
		}
		/* Only regular files carry data, as in Go's archive/tar and Python's tarfile. */
		if (e->type != LG_TAR_FILE)
			size = 0;
		e->path = r->path;
		e->linkname =
		    (e->type == LG_TAR_SYMLINK || e->type == LG_TAR_HARDLINK) ? r->linkname : "";
		e->mode = (uint32_t)(mode & 07777);
		e->uid = p.have_uid ? p.uid : uid;
		e->gid = p.have_gid ? p.gid : gid;
		e->mtime = p.have_mtime ? p.mtime : mtime;
		e->size = size;
		r->left = size;
		r->pad = padding(size);
		ret = 1;
		goto out;
	}
out:
	pending_clear(&p);
	return ret;
}

ssize_t lg_tar_read_data(struct lg_tar_reader *r, void *buf, size_t n, struct lg_err **err)
{
	size_t got;
	int k;

	if (n > r->left)
		n = (size_t)r->left;
	if (n == 0)
		return 0;
	k = read_exact(r, buf, n, &got);
	if (k < 0)
		return lg_err_set(err, -k, "read tar archive");
	if (k == 0)
		return truncated(r, err);
	r->left -= n;
	return (ssize_t)n;
}

/* ---- extraction ---- */

#define SHOW_MAX 160
/*
 * The directory list kept for the final modes holds names; without a bound
 * a million 4 KiB names would hold 4 GiB.  A Debian root file system needs
 * well under 1 MiB.
 */
#define LG_TAR_DIRS_MAX (64u << 20)

struct dirmode {
	char *rel;
	uint32_t mode;
	uint64_t mtime;
	size_t depth;
	size_t seq;
};

struct xt {
	int root;  /* dest_dir */
	bool walk; /* no openat2: component-by-component walk */
	bool setid_ok;
	bool chown_ok;
	size_t dir_bytes; /* of the names in dirs, bounded by LG_TAR_DIRS_MAX */
	struct dirmode *dirs;
	size_t ndirs, capdirs;
	uint8_t *buf;
};

/*
 * A name fit for a one-line message: printable ASCII kept, anything else
 * (newlines, escapes, bytes of other encodings) shown as '?', cut long.
 */
static void show(const char *s, char out[SHOW_MAX + 4])
{
	size_t i;

	for (i = 0; s[i] && i < SHOW_MAX; i++)
		out[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	if (s[i]) {
		memcpy(out + i, "...", 3);
		i += 3;
	}
	out[i] = '\0';
}

/*
 * The archive's name as a path relative to dest_dir: leading slashes
 * dropped (tar's own behaviour; the archive describes a whole tree), empty
 * and "." components dropped.  A ".." component refuses the entry: with
 * symlinks about, no textual rule makes it safe, and no root file system
 * needs one.
 */
static int normalize(const char *in, char **out)
{
	char *o = xmalloc(strlen(in) + 1);
	size_t n = 0;
	const char *p = in;

	while (*p) {
		const char *end = strchrnul(p, '/');
		size_t len = (size_t)(end - p);

		if (len == 2 && p[0] == '.' && p[1] == '.') {
			free(o);
			return -EINVAL;
		}
		if (len > 0 && !(len == 1 && p[0] == '.')) {
			if (n)
				o[n++] = '/';
			memcpy(o + n, p, len);
			n += len;
		}
		p = *end ? end + 1 : end;
	}
	o[n] = '\0';
	*out = o;
	return 0;
}

static int sys_openat2(int dirfd, const char *path, int flags)
{
	struct open_how how = {
	    .flags = (uint64_t)(flags | O_CLOEXEC),
	    /*
	     * BENEATH: `..`, absolute paths and symlinks that leave the tree
	     * fail with EXDEV instead of being followed.  NO_MAGICLINKS: no
	     * jump through /proc/self/fd-style links, which BENEATH alone
	     * would not check.
	     */
	    .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
	};
	long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof(how));

	return fd < 0 ? -errno : (int)fd;
}

/* One component (no '/') below dir: a directory, never through a symlink in the walk. */
static int open_step(struct xt *x, int dir, const char *comp)
{
	int fd;

	if (!x->walk) {
		fd = sys_openat2(dir, comp, O_PATH | O_DIRECTORY);
		if (fd != -ENOSYS)
			return fd;
		x->walk = true;
	}
	fd = openat(dir, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		struct stat st;
		int e = errno;

		/* Say "symlink" rather than "not a directory": that is what was refused. */
		if ((e == ENOTDIR || e == ELOOP) &&
		    fstatat(dir, comp, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
			return -ELOOP;
		return -e;
	}
	return fd;
}

/*
 * Opens the directory rel (normalized, may be "") beneath the root,
 * creating missing components (0755, as tar does for implied parents) if
 * create.  Returns an fd usable as a dirfd, or -errno.
 */
static int open_dir(struct xt *x, const char *rel, bool create)
{
	cleanup_free char *copy = NULL;
	int cur, fd;
	char *p;

	if (rel[0] == '\0') {
		fd = fcntl(x->root, F_DUPFD_CLOEXEC, 0);
		return fd < 0 ? -errno : fd;
	}
	if (!x->walk) {
		/* The whole path in one call: symlinks inside the tree are followed, beneath it. */
		fd = sys_openat2(x->root, rel, O_PATH | O_DIRECTORY);
		if (fd >= 0 || (fd != -ENOSYS && (fd != -ENOENT || !create)))
			return fd;
		if (fd == -ENOSYS)
			x->walk = true;
	}
	/*
	 * One component at a time.  With openat2 each step is beneath the
	 * previous directory, stricter than beneath the root: a symlink with
	 * `..` in a path still being created fails, which is safe.
	 */
	copy = xstrdup(rel);
	cur = fcntl(x->root, F_DUPFD_CLOEXEC, 0);
	if (cur < 0)
		return -errno;
	for (p = copy; *p;) {
		char *end = strchrnul(p, '/');
		bool last = *end == '\0';

		*end = '\0';
		fd = open_step(x, cur, p);
		if (fd == -ENOENT && create) {
			if (mkdirat(cur, p, 0755) < 0 && errno != EEXIST) {
				fd = -errno;
			} else {
				int wfd =
				    openat(cur, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
				/* mkdir's mode is cut by the umask; the tree should not depend on
				 * it. */
				if (wfd >= 0) {
					(void)fchmod(wfd, 0755);
					close(wfd);
				}
				fd = open_step(x, cur, p);
			}
		}
		close(cur);
		if (fd < 0)
			return fd;
		cur = fd;
		p = last ? end : end + 1;
	}
	return cur;
}

/* Splits rel into its parent (returned, new string) and *base (inside rel). */
static char *split(const char *rel, const char **base)
{
	const char *slash = strrchr(rel, '/');

	if (slash == NULL) {
		*base = rel;
		return xstrdup("");
	}
	char *dir = xmalloc((size_t)(slash - rel) + 1);
	memcpy(dir, rel, (size_t)(slash - rel));
	dir[slash - rel] = '\0';
	*base = slash + 1;
	return dir;
}

/*
 * Makes room for a new non-directory at base: whatever is there is
 * unlinked, never opened, so a symlink or hard link an earlier entry made
 * is replaced, not written through.  An existing directory is refused.
 */
static int clear_slot(int parent, const char *base)
{
	struct stat st;

	if (fstatat(parent, base, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (S_ISDIR(st.st_mode))
		return -EISDIR;
	if (unlinkat(parent, base, 0) < 0)
		return -errno;
	return 0;
}

static uint32_t entry_mode(struct xt *x, const struct lg_tar_entry *e, struct lg_tar_stats *st)
{
	uint32_t mode = e->mode;

	/* A setuid binary in an image is a privilege the image's author hands itself. */
	if (!x->setid_ok && (mode & (S_ISUID | S_ISGID))) {
		mode &= ~(uint32_t)(S_ISUID | S_ISGID);
		st->setid_cleared++;
	}
	return mode;
}

/*
 * Times matter in an image: Python, for one, checks a .pyc against its
 * source's mtime and recompiles (on a read-only root, every start) when
 * they differ.  base NULL: fd itself; else base in fd, not followed.
 */
static int set_mtime(int fd, const char *base, uint64_t mtime)
{
	struct timespec ts[2];

	if (mtime >= (1ull << 62))
		return 0; /* not a time: leave it */
	ts[0].tv_sec = ts[1].tv_sec = (time_t)mtime;
	ts[0].tv_nsec = ts[1].tv_nsec = 0;
	return base ? utimensat(fd, base, ts, AT_SYMLINK_NOFOLLOW) : futimens(fd, ts);
}

static int apply_owner(struct xt *x, int fd, const struct lg_tar_entry *e)
{
	if (!x->chown_ok)
		return 0;
	if (e->uid >= UINT32_MAX || e->gid >= UINT32_MAX)
		return -EINVAL;
	return fchown(fd, (uid_t)e->uid, (gid_t)e->gid) < 0 ? -errno : 0;
}

static int write_file(struct xt *x, struct lg_tar_reader *r, int parent, const char *base,
		      const struct lg_tar_entry *e, uint32_t mode, struct lg_tar_stats *st,
		      struct lg_err **err)
{
	cleanup_close int fd = -1;
	int ret;

	if ((ret = clear_slot(parent, base)) < 0)
		return ret;
	/* O_EXCL|O_NOFOLLOW: only ever a new file, never one reached through a link. */
	fd = openat(parent, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	for (;;) {
		ssize_t n = lg_tar_read_data(r, x->buf, 65536, err);
		if (n < 0)
			return (int)n;
		if (n == 0)
			break;
		ssize_t w = lg_write_all(fd, x->buf, (size_t)n);
		if (w < 0)
			return (int)w;
		st->bytes += (uint64_t)n;
	}
	if ((ret = apply_owner(x, fd, e)) < 0)
		return ret;
	/* After chown, which clears setuid bits. */
	if (fchmod(fd, mode) < 0 || set_mtime(fd, NULL, e->mtime) < 0)
		return -errno;
	return 0;
}

static int make_dir(struct xt *x, int parent, const char *base, const char *rel,
		    const struct lg_tar_entry *e, uint32_t mode, struct lg_err **err)
{
	struct stat st;
	cleanup_close int fd = -1;
	int ret;

	if (mkdirat(parent, base, 0700) < 0) {
		if (errno != EEXIST)
			return -errno;
		if (fstatat(parent, base, &st, AT_SYMLINK_NOFOLLOW) < 0)
			return -errno;
		if (!S_ISDIR(st.st_mode)) {
			/* A symlink or file there is replaced, never followed. */
			if (unlinkat(parent, base, 0) < 0 || mkdirat(parent, base, 0700) < 0)
				return -errno;
		}
	}
	fd = openat(parent, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if ((ret = apply_owner(x, fd, e)) < 0)
		return ret;
	/*
	 * The mode waits until the end: a read-only directory must still
	 * take the entries below it.  Owner rwx meanwhile.
	 */
	if (fchmod(fd, 0700) < 0)
		return -errno;
	x->dir_bytes += strlen(rel) + 1;
	if (x->dir_bytes > LG_TAR_DIRS_MAX)
		return lg_err_msg(err, E2BIG, "tar: directory names exceed %u bytes in all",
				  LG_TAR_DIRS_MAX);
	if (x->ndirs == x->capdirs) {
		x->capdirs = x->capdirs ? x->capdirs * 2 : 64;
		x->dirs = xrealloc(x->dirs, x->capdirs * sizeof(*x->dirs));
	}
	x->dirs[x->ndirs].rel = xstrdup(rel);
	x->dirs[x->ndirs].mode = mode;
	x->dirs[x->ndirs].mtime = e->mtime;
	x->dirs[x->ndirs].seq = x->ndirs;
	x->dirs[x->ndirs].depth = 0;
	for (const char *c = rel; *c; c++)
		x->dirs[x->ndirs].depth += *c == '/';
	x->ndirs++;
	return 0;
}

static int make_hardlink(struct xt *x, int parent, const char *base, const char *rel,
			 const struct lg_tar_entry *e)
{
	cleanup_free char *target = NULL;
	cleanup_free char *tdir = NULL;
	cleanup_close int tfd = -1;
	const char *tbase;
	struct stat st;
	int ret;

	if (e->linkname[0] == '\0' || normalize(e->linkname, &target) < 0 || target[0] == '\0')
		return -EXDEV;
	if (strcmp(target, rel) == 0)
		return 0; /* a link to itself: already there */
	tdir = split(target, &tbase);
	tfd = open_dir(x, tdir, false);
	if (tfd < 0)
		return tfd == -ENOENT ? -ENOENT : -EXDEV;
	/*
	 * Only a regular file already in the tree: a link to a symlink
	 * would be followed by readers later, a link to a directory is not
	 * possible, and one to a device could have come from nowhere else.
	 */
	if (fstatat(tfd, tbase, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EPERM;
	if ((ret = clear_slot(parent, base)) < 0)
		return ret;
	/* flags 0: linkat does not follow a symlink at the source. */
	if (linkat(tfd, tbase, parent, base, 0) < 0)
		return -errno;
	return 0;
}

static int extract_one(struct xt *x, struct lg_tar_reader *r, const struct lg_tar_entry *e,
		       const char *rel, struct lg_tar_stats *st, struct lg_err **err)
{
	cleanup_free char *dir = NULL;
	cleanup_close int parent = -1;
	const char *base;
	uint32_t mode;
	int ret;

	if (rel[0] == '\0') {
		/* "./" or "/": dest_dir itself, whose mode and owner are the caller's. */
		return e->type == LG_TAR_DIR ? 0 : -EISDIR;
	}
	dir = split(rel, &base);
	parent = open_dir(x, dir, true);
	if (parent < 0)
		return parent;
	mode = entry_mode(x, e, st);
	switch (e->type) {
	case LG_TAR_FILE:
		if ((ret = write_file(x, r, parent, base, e, mode, st, err)) < 0)
			return ret;
		st->files++;
		return 0;
	case LG_TAR_DIR:
		if ((ret = make_dir(x, parent, base, rel, e, mode, err)) < 0)
			return ret;
		st->dirs++;
		return 0;
	case LG_TAR_SYMLINK:
		/* The target is stored as text; it is never resolved here. */
		if (e->linkname[0] == '\0')
			return -EINVAL;
		if ((ret = clear_slot(parent, base)) < 0)
			return ret;
		if (symlinkat(e->linkname, parent, base) < 0)
			return -errno;
		if (x->chown_ok && (e->uid >= UINT32_MAX || e->gid >= UINT32_MAX))
			return -EINVAL;
		if (x->chown_ok &&
		    fchownat(parent, base, (uid_t)e->uid, (gid_t)e->gid, AT_SYMLINK_NOFOLLOW) < 0)
			return -errno;
		if (set_mtime(parent, base, e->mtime) < 0)
			return -errno;
		st->symlinks++;
		return 0;
	case LG_TAR_HARDLINK:
		if ((ret = make_hardlink(x, parent, base, rel, e)) == -ENOENT) {
			char shown[SHOW_MAX + 4], target[SHOW_MAX + 4];
			show(e->path, shown);
			show(e->linkname, target);
			return lg_err_msg(err, ENOENT,
					  "tar entry `%s`: hard link target `%s` is not in the "
					  "archive before it",
					  shown, target);
		}
		if (ret < 0)
			return ret;
		st->hardlinks++;
		return 0;
	case LG_TAR_OTHER:
		break;
	}
	return 0;
}

static int cmp_dirs(const void *a, const void *b)
{
	const struct dirmode *x = a, *y = b;

	int c;

	if (x->depth != y->depth)
		return x->depth > y->depth ? -1 : 1;
	/* Equal names side by side, the latest entry first: it is the one applied. */
	if ((c = strcmp(x->rel, y->rel)) != 0)
		return c;
	return (x->seq < y->seq) - (x->seq > y->seq);
}

/* Directory modes, deepest first so each parent stays writable until its turn. */
static int finish_dirs(struct xt *x, struct lg_err **err)
{
	if (x->ndirs > 1)
		qsort(x->dirs, x->ndirs, sizeof(*x->dirs), cmp_dirs);
	for (size_t i = 0; i < x->ndirs; i++) {
		const char *rel = x->dirs[i].rel;
		int fd;

		/* The same directory twice: the later entry (sorted first) wins. */
		if (i > 0 && strcmp(x->dirs[i - 1].rel, rel) == 0)
			continue;
		/* fchmod needs a real descriptor: O_RDONLY, not the O_PATH of open_dir. */
		fd = x->walk ? open_dir(x, rel, false)
			     : sys_openat2(x->root, rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
		if (fd == -ENOENT || fd == -ENOTDIR)
			continue; /* replaced by a later entry */
		/* Last: creating the entries inside changed the directory's mtime. */
		if (fd < 0 || fchmod(fd, x->dirs[i].mode) < 0 ||
		    set_mtime(fd, NULL, x->dirs[i].mtime) < 0) {
			char shown[SHOW_MAX + 4];
			int e = fd < 0 ? -fd : errno;
			if (fd >= 0)
				close(fd);
			show(rel, shown);
			return lg_err_set(err, e, "tar entry `%s`: set the directory's mode",
					  shown);
		}
		close(fd);
	}
	return 0;
}

static ssize_t fd_read(void *ctx, void *buf, size_t n)
{
	int fd = *(int *)ctx;

	for (;;) {
		ssize_t k = read(fd, buf, n);
		if (k >= 0 || errno != EINTR)
			return k < 0 ? -errno : k;
	}
}

static int check_empty(int root, struct lg_err **err, const char *dest)
{
	int fd = openat(root, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d;
	struct dirent *de;
	int ret = 0;

	if (fd < 0)
		return lg_err_sys(err, "open `%s`", dest);
	d = fdopendir(fd);
	if (d == NULL) {
		close(fd);
		return lg_err_sys(err, "open `%s`", dest);
	}
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
			ret =
			    lg_err_msg(err, ENOTEMPTY, "tar: destination `%s` is not empty", dest);
			break;
		}
	}
	closedir(d);
	return ret;
}

static int entry_error(int code, const char *path, struct lg_err **err)
{
	char shown[SHOW_MAX + 4];

	show(path, shown);
	switch (code) {
	case -EXDEV:
	case -ELOOP:
		return lg_err_msg(err, EXDEV,
				  "tar entry `%s`: its path or link target leads outside the "
				  "destination (through `..`, an absolute link or a symlink)",
				  shown);
	case -EISDIR:
		return lg_err_msg(err, EISDIR,
				  "tar entry `%s`: a directory is already there (or it names the "
				  "destination itself)",
				  shown);
	case -EPERM:
		return lg_err_msg(err, EPERM,
				  "tar entry `%s`: hard link target is not a regular file", shown);
	default:
		return lg_err_set(err, -code, "tar entry `%s`", shown);
	}
}

int lg_tar_extract(int in_fd, const char *dest_dir, const struct lg_tar_opts *opts,
		   struct lg_tar_stats *stats, struct lg_err **err)
{
	static const struct lg_tar_opts defaults;
	struct lg_tar_stats local;
	struct lg_tar_stats *st = stats ? stats : &local;
	struct lg_tar_reader *r = NULL;
	struct xt x = {.root = -1};
	uint64_t max_bytes, max_entries, data_total = 0;
	int ret;

	if (opts == NULL)
		opts = &defaults;
	memset(st, 0, sizeof(*st));
	max_bytes = opts->max_total_bytes ? opts->max_total_bytes : LG_TAR_DEFAULT_MAX_BYTES;
	max_entries = opts->max_entries ? opts->max_entries : LG_TAR_DEFAULT_MAX_ENTRIES;
	x.walk = opts->no_openat2;
	x.setid_ok = opts->keep_setid;
	/* Without root, chown would fail or lie; the tree is then single-user. */
	x.chown_ok = opts->keep_owners && geteuid() == 0;
	st->owners_applied = x.chown_ok;

	x.root = open(dest_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (x.root < 0)
		return lg_err_sys(err, "tar: open destination `%s`", dest_dir);
	if ((ret = check_empty(x.root, err, dest_dir)) < 0)
		goto out;
	/*
	 * Probe openat2 once: ENOSYS on kernels before 5.6, EPERM under
	 * seccomp profiles that predate it (older container runtimes).
	 */
	if (!x.walk) {
		int fd = sys_openat2(x.root, ".", O_PATH | O_DIRECTORY);
		if (fd >= 0)
			close(fd);
		else if (fd == -ENOSYS || fd == -EPERM)
			x.walk = true;
	}
	x.buf = xmalloc(65536);
	r = lg_tar_reader_new(fd_read, &in_fd);

	for (;;) {
		struct lg_tar_entry e;
		cleanup_free char *rel = NULL;

		ret = lg_tar_next(r, &e, err);
		if (ret < 0)
			goto out;
		if (ret == 0)
			break;
		if (++st->entries > max_entries) {
			ret = lg_err_msg(err, E2BIG, "tar: more than %llu entries",
					 (unsigned long long)max_entries);
			goto out;
		}
		/* Checked before a byte is written, so a huge size field costs nothing. */
		if (e.size > max_bytes - data_total) {
			char shown[SHOW_MAX + 4];
			show(e.path, shown);
			ret = lg_err_msg(
			    err, EFBIG, "tar entry `%s`: file data exceeds the limit of %llu bytes",
			    shown, (unsigned long long)max_bytes);
			goto out;
		}
		data_total += e.size;
		if (e.type == LG_TAR_OTHER) {
			/* No device node or fifo: the guest's /dev is a devtmpfs. */
			st->skipped_special++;
			continue;
		}
		if (normalize(e.path, &rel) < 0) {
			ret = entry_error(-EXDEV, e.path, err);
			goto out;
		}
		ret = extract_one(&x, r, &e, rel, st, err);
		if (ret < 0) {
			if (err == NULL || *err == NULL)
				ret = entry_error(ret, e.path, err);
			goto out;
		}
	}
	ret = finish_dirs(&x, err);
out:
	if (ret < 0 && err && *err == NULL)
		ret = lg_err_msg(err, EIO, "tar: extraction failed");
	lg_tar_reader_free(r);
	for (size_t i = 0; i < x.ndirs; i++)
		free(x.dirs[i].rel);
	free(x.dirs);
	free(x.buf);
	if (x.root >= 0)
		close(x.root);
	return ret < 0 ? ret : 0;
}
