/* SPDX-License-Identifier: Apache-2.0 */
#include "image/cpio.h"

#include "common/err.h"
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CPIO_HDR_LEN 110
/* The kernel reads names into a PATH_MAX buffer. */
#define CPIO_NAME_MAX 4095
/* newc stores sizes in 8 hex digits. */
#define CPIO_FILE_MAX 0xffffffffull

struct lg_cpio {
	int fd;
	uint64_t off;
	uint32_t next_ino;
	bool finished;
	char **paths; /* every path added so far, without the leading '/' */
	size_t npaths;
	size_t cap;
};

struct lg_cpio *lg_cpio_new(int fd)
{
	struct lg_cpio *c = xzalloc(sizeof(*c));

	c->fd = fd;
	c->next_ino = 1;
	return c;
}

void lg_cpio_free(struct lg_cpio *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->npaths; i++)
		free(c->paths[i]);
	free(c->paths);
	free(c);
}

uint64_t lg_cpio_size(const struct lg_cpio *c)
{
	return c->off;
}

static bool have_path(const struct lg_cpio *c, const char *rel)
{
	for (size_t i = c->npaths; i > 0; i--)
		if (strcmp(c->paths[i - 1], rel) == 0)
			return true;
	return false;
}

static void remember(struct lg_cpio *c, const char *rel)
{
	if (c->npaths == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 64;
		c->paths = xrealloc(c->paths, c->cap * sizeof(*c->paths));
	}
	c->paths[c->npaths++] = xstrdup(rel);
}

static int write_bytes(struct lg_cpio *c, const void *p, size_t n, struct lg_err **err)
{
	ssize_t w = lg_write_all(c->fd, p, n);
	if (w < 0)
		return lg_err_set(err, (int)-w, "write cpio archive");
	c->off += n;
	return 0;
}

static int pad4(struct lg_cpio *c, struct lg_err **err)
{
	static const char zeros[4];
	size_t n = (size_t)((4 - (c->off & 3)) & 3);
	return n ? write_bytes(c, zeros, n, err) : 0;
}

static int write_header(struct lg_cpio *c, const char *rel, uint32_t ino, uint32_t mode,
			uint64_t filesize, unsigned rmajor, unsigned rminor, struct lg_err **err)
{
	char hdr[CPIO_HDR_LEN + 1];
	size_t namesize = strlen(rel) + 1;
	uint32_t nlink = S_ISDIR(mode) ? 2 : 1;
	int r;

	r = snprintf(hdr, sizeof(hdr), "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		     ino, mode, 0u /* uid */, 0u /* gid */, nlink, 0u /* mtime */,
		     (unsigned)filesize, 0u /* devmajor */, 0u /* devminor */, rmajor, rminor,
		     (unsigned)namesize, 0u /* check */);
	if (r != CPIO_HDR_LEN)
		return lg_err_msg(err, EINVAL, "cpio header for `%s` has the wrong length", rel);
	if ((r = write_bytes(c, hdr, CPIO_HDR_LEN, err)) < 0)
		return r;
	if ((r = write_bytes(c, rel, namesize, err)) < 0)
		return r;
	return pad4(c, err);
}

static int write_entry_header(struct lg_cpio *c, const char *rel, uint32_t mode, uint64_t filesize,
			      unsigned rmajor, unsigned rminor, struct lg_err **err)
{
	int r = write_header(c, rel, c->next_ino, mode, filesize, rmajor, rminor, err);

	if (r < 0)
		return r;
	c->next_ino++;
	remember(c, rel);
	return 0;
}

static int check_path(const char *path, struct lg_err **err)
{
	const char *p;
	size_t len;

	if (path == NULL || path[0] != '/' || path[1] == '\0')
		return lg_err_msg(err, EINVAL, "cpio path `%s` must be absolute and not /",
				  path ? path : "(null)");
	len = strlen(path);
	if (len > CPIO_NAME_MAX)
		return lg_err_msg(err, EINVAL, "cpio path `%.64s...` is too long", path);
	for (p = path; *p;) {
		const char *comp = p + 1;
		const char *end = strchrnul(comp, '/');
		size_t clen = (size_t)(end - comp);

		if (clen == 0 || (clen == 1 && comp[0] == '.') ||
		    (clen == 2 && comp[0] == '.' && comp[1] == '.'))
			return lg_err_set(
			    err, 0, "cpio path `%s` has an empty, `.` or `..` component", path);
		p = end;
	}
	return 0;
}

/* Adds every missing parent directory of rel (a path without leading '/'). */
static int add_parents(struct lg_cpio *c, const char *rel, struct lg_err **err)
{
	cleanup_free char *copy = xstrdup(rel);

	for (char *p = strchr(copy, '/'); p != NULL; p = strchr(p + 1, '/')) {
		*p = '\0';
		if (!have_path(c, copy)) {
			int r = write_entry_header(c, copy, S_IFDIR | 0755, 0, 0, 0, err);
			if (r < 0)
				return r;
		}
		*p = '/';
	}
	return 0;
}

/* Validates path, adds its parents and writes its header.  Returns 0 or negative. */
static int begin_entry(struct lg_cpio *c, const char *path, uint32_t mode, uint64_t filesize,
		       unsigned rmajor, unsigned rminor, struct lg_err **err)
{
	const char *rel;
	int r;

	if (c->finished)
		return lg_err_msg(err, EINVAL, "cpio archive already finished");
	if ((r = check_path(path, err)) < 0)
		return r;
	if (filesize > CPIO_FILE_MAX)
		return lg_err_msg(err, EFBIG, "`%s` is too big for a newc cpio archive", path);
	rel = path + 1;
	if (have_path(c, rel))
		return lg_err_msg(err, EEXIST, "cpio path `%s` added twice", path);
	if ((r = add_parents(c, rel, err)) < 0)
		return r;
	return write_entry_header(c, rel, mode, filesize, rmajor, rminor, err);
}

int lg_cpio_add_dir(struct lg_cpio *c, const char *path, mode_t mode, struct lg_err **err)
{
	return begin_entry(c, path, S_IFDIR | (mode & 07777), 0, 0, 0, err);
}

int lg_cpio_add_data(struct lg_cpio *c, const char *path, mode_t mode, const void *data, size_t len,
		     struct lg_err **err)
{
	int r = begin_entry(c, path, S_IFREG | (mode & 07777), len, 0, 0, err);

	if (r < 0)
		return r;
	if ((r = write_bytes(c, data, len, err)) < 0)
		return r;
	return pad4(c, err);
}

int lg_cpio_add_file(struct lg_cpio *c, const char *path, mode_t mode, const char *host_path,
		     struct lg_err **err)
{
	cleanup_close int fd = open(host_path, O_RDONLY | O_CLOEXEC);
	cleanup_free char *buf = NULL;
	const size_t bufsz = 1 << 16;
	uint64_t left;
	struct stat st;
	int r;

	if (fd < 0)
		return lg_err_sys(err, "open `%s`", host_path);
	if (fstat(fd, &st) < 0)
		return lg_err_sys(err, "stat `%s`", host_path);
	if (!S_ISREG(st.st_mode))
		return lg_err_msg(err, EINVAL, "`%s` is not a regular file", host_path);
	if ((r = begin_entry(c, path, S_IFREG | (mode & 07777), (uint64_t)st.st_size, 0, 0, err)) <
	    0)
		return r;
	buf = xmalloc(bufsz);
	/* Exactly the size in the header is copied: a file that changes
	 * under us must not desynchronize the archive. */
	for (left = (uint64_t)st.st_size; left > 0;) {
		size_t want = left < bufsz ? (size_t)left : bufsz;
		ssize_t n = lg_read_all(fd, buf, want);
		if (n < 0)
			return lg_err_set(err, (int)-n, "read `%s`", host_path);
		if ((size_t)n != want)
			return lg_err_msg(err, EIO, "`%s` shrank while being copied", host_path);
		if ((r = write_bytes(c, buf, want, err)) < 0)
			return r;
		left -= want;
	}
	return pad4(c, err);
}

int lg_cpio_add_symlink(struct lg_cpio *c, const char *path, const char *target,
			struct lg_err **err)
{
	size_t len = strlen(target);
	int r;

	if (len == 0 || len > CPIO_NAME_MAX)
		return lg_err_msg(err, EINVAL, "bad symlink target for `%s`", path);
	if ((r = begin_entry(c, path, S_IFLNK | 0777, len, 0, 0, err)) < 0)
		return r;
	if ((r = write_bytes(c, target, len, err)) < 0)
		return r;
	return pad4(c, err);
}

int lg_cpio_add_chardev(struct lg_cpio *c, const char *path, mode_t mode, unsigned major,
			unsigned minor, struct lg_err **err)
{
	return begin_entry(c, path, S_IFCHR | (mode & 07777), 0, major, minor, err);
}

int lg_cpio_finish(struct lg_cpio *c, struct lg_err **err)
{
	int r;

	if (c->finished)
		return lg_err_msg(err, EINVAL, "cpio archive already finished");
	/* The trailer is not a file: inode 0, as gen_init_cpio writes it. */
	if ((r = write_header(c, "TRAILER!!!", 0, 0, 0, 0, 0, err)) < 0)
		return r;
	c->finished = true;
	return 0;
}
