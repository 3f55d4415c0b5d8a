/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the tar reader and the extractor: archives are built in
 * memory here, normal ones and hostile ones, and every hostile case is run
 * with openat2 and with the fallback walk.  After each, a sentinel
 * directory beside the destination must be untouched and nothing may have
 * appeared beside it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/err.h"
#include "common/util.h"
#include "image/tar.h"
#include "tarbuild.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- a tiny tar writer (tarbuild.h), owned by 1000:1000 ---- */

static void tb_header(struct tb *t, const char *name, char type, unsigned mode, uint64_t size,
		      const char *link)
{
	tb_header_ids(t, name, type, mode, size, link, 1000, 1000);
}

static void tb_file(struct tb *t, const char *name, unsigned mode, const char *data)
{
	tb_header(t, name, '0', mode, strlen(data), NULL);
	tb_raw(t, data, strlen(data));
	tb_pad(t);
}

static void tb_dir(struct tb *t, const char *name, unsigned mode)
{
	tb_header(t, name, '5', mode, 0, NULL);
}

static void tb_link(struct tb *t, const char *name, char type, const char *target)
{
	tb_header(t, name, type, 0777, 0, target);
}

/* An extended header ('x', 'g', 'L', 'K') with the given data. */
static void tb_ext(struct tb *t, char type, const void *data, size_t n)
{
	tb_header(t, "././@Ext", type, 0644, n, NULL);
	tb_raw(t, data, n);
	tb_pad(t);
}

static void tb_pax_path(struct tb *t, const char *key, const char *val, size_t vlen)
{
	/* "LEN key=val\n", LEN counting itself. */
	size_t body = 1 + strlen(key) + 1 + vlen + 1;
	size_t len = body + 1;
	char *rec;
	int n;

	while (len != body + (size_t)snprintf(NULL, 0, "%zu", len))
		len = body + (size_t)snprintf(NULL, 0, "%zu", len);
	rec = xmalloc(len + 1);
	n = snprintf(rec, len + 1, "%zu %s=", len, key);
	memcpy(rec + n, val, vlen);
	rec[len - 1] = '\n';
	tb_ext(t, 'x', rec, len);
	free(rec);
}

static void tb_end(struct tb *t)
{
	static const uint8_t zeros[1024];
	tb_raw(t, zeros, sizeof(zeros));
}

/* ---- running the extractor ---- */

struct env {
	char *base; /* holds dest/ and sentinel/ and nothing else */
	char *dest;
	char *sentinel;
};

static void env_new(struct env *v)
{
	char path[4200];
	int fd;

	v->base = xstrdup("/tmp/lg-test-tar-XXXXXX");
	assert_non_null(mkdtemp(v->base));
	v->dest = xasprintf("%s/dest", v->base);
	v->sentinel = xasprintf("%s/sentinel", v->base);
	assert_int_equal(mkdir(v->dest, 0755), 0);
	assert_int_equal(mkdir(v->sentinel, 0755), 0);
	snprintf(path, sizeof(path), "%s/keep", v->sentinel);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "sentinel", 8), 8);
	close(fd);
}

static size_t count_dir(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;
	size_t n = 0;

	assert_non_null(d);
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static char *slurp(const char *path)
{
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	char *buf;
	ssize_t n;

	if (fd < 0)
		return NULL;
	buf = xzalloc(65536);
	n = read(fd, buf, 65535);
	close(fd);
	assert_true(n >= 0);
	return buf;
}

/* Nothing beside dest, the sentinel as it was; then everything removed. */
static void env_check_free(struct env *v)
{
	char path[4200];
	char *s;

	assert_int_equal(count_dir(v->base), 2);
	assert_int_equal(count_dir(v->sentinel), 1);
	snprintf(path, sizeof(path), "%s/keep", v->sentinel);
	s = slurp(path);
	assert_non_null(s);
	assert_string_equal(s, "sentinel");
	free(s);
	assert_int_equal(lg_rm_rf(v->base), 0);
	free(v->base);
	free(v->dest);
	free(v->sentinel);
}

static int run_extract(struct env *v, const struct tb *t, const struct lg_tar_opts *o,
		       struct lg_tar_stats *st, struct lg_err **err)
{
	int fd = memfd_create("tar", MFD_CLOEXEC);
	int r;

	assert_true(fd >= 0);
	assert_int_equal(lg_write_all(fd, t->buf, t->len), (ssize_t)t->len);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	r = lg_tar_extract(fd, v->dest, o, st, err);
	close(fd);
	return r;
}

static char *dpath(struct env *v, const char *rel)
{
	return xasprintf("%s/%s", v->dest, rel);
}

static mode_t mode_of(struct env *v, const char *rel)
{
	cleanup_free char *p = dpath(v, rel);
	struct stat st;

	assert_int_equal(lstat(p, &st), 0);
	return st.st_mode;
}

static bool exists(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0;
}

/* ---- normal archives ---- */

static void check_normal(bool walk)
{
	struct env v;
	struct tb t = {0};
	struct lg_tar_opts o = {.no_openat2 = walk};
	struct lg_tar_stats st;
	struct lg_err *err = NULL;
	char longname[4001];
	char *s, *p;
	struct stat a, b;

	env_new(&v);
	tb_dir(&t, "./", 0755);
	tb_dir(&t, "./etc/", 0755);
	tb_file(&t, "./etc/hostname", 0644, "sandbox\n");
	tb_file(&t, "./usr/bin/tool", 0755, "#!/bin/sh\necho hi\n"); /* parents implied */
	tb_link(&t, "./bin", '2', "usr/bin");
	/* Through a relative symlink: beneath the root, allowed; the walk follows none. */
	if (!walk)
		tb_file(&t, "bin/viasym", 0600, "through a relative symlink");
	tb_link(&t, "./etc/mtab", '2', "/proc/self/mounts"); /* stored, never followed */
	tb_link(&t, "./usr/bin/tool2", '1', "./usr/bin/tool");
	tb_dir(&t, "ro/", 0555);
	tb_file(&t, "ro/inside", 0444, "x");
	tb_file(&t, "/abs/file", 0640, "abs"); /* leading slash stripped */
	tb_pax_path(&t, "path", "pax/named/file", strlen("pax/named/file"));
	tb_file(&t, "ignored-name", 0644, "pax");
	tb_ext(&t, 'g', "12 comment=\n", 12);
	memset(longname, 0, sizeof(longname));
	for (size_t i = 0; i < 4000; i++)
		longname[i] = (i % 50 == 49) ? '/' : 'n';
	longname[3999] = 'f';
	tb_ext(&t, 'L', longname, strlen(longname) + 1);
	tb_file(&t, "short", 0644, "long");
	tb_header(&t, "dev/null", '3', 0666, 0, NULL);
	tb_header(&t, "fifo", '6', 0644, 0, NULL);
	tb_file(&t, "suid", 04755, "s");
	tb_end(&t);

	assert_int_equal(run_extract(&v, &t, &o, &st, &err), 0);
	assert_null(err);
	assert_int_equal(st.files, walk ? 7 : 8);
	assert_int_equal(st.symlinks, 2);
	assert_int_equal(st.hardlinks, 1);
	assert_int_equal(st.skipped_special, 2);
	assert_int_equal(st.setid_cleared, 1);
	assert_false(st.owners_applied);

	p = dpath(&v, "etc/hostname");
	s = slurp(p);
	assert_string_equal(s, "sandbox\n");
	free(s);
	free(p);
	assert_int_equal(mode_of(&v, "usr/bin/tool") & 07777, 0755);
	assert_int_equal(mode_of(&v, "usr") & 07777, 0755);
	assert_true(S_ISLNK(mode_of(&v, "bin")));
	assert_true(S_ISLNK(mode_of(&v, "etc/mtab")));
	p = dpath(&v, "usr/bin/tool");
	assert_int_equal(stat(p, &a), 0);
	free(p);
	p = dpath(&v, "usr/bin/tool2");
	assert_int_equal(stat(p, &b), 0);
	free(p);
	assert_int_equal(a.st_ino, b.st_ino);
	assert_int_equal(mode_of(&v, "ro") & 07777, 0555);
	/* Times: a file, a directory filled after it was made, a symlink. */
	p = dpath(&v, "ro");
	assert_int_equal(lstat(p, &a), 0);
	assert_int_equal(a.st_mtime, 1234567890);
	free(p);
	p = dpath(&v, "etc/hostname");
	assert_int_equal(lstat(p, &a), 0);
	assert_int_equal(a.st_mtime, 1234567890);
	free(p);
	p = dpath(&v, "bin");
	assert_int_equal(lstat(p, &a), 0);
	assert_int_equal(a.st_mtime, 1234567890);
	free(p);
	assert_int_equal(mode_of(&v, "ro/inside") & 07777, 0444);
	assert_int_equal(mode_of(&v, "abs/file") & 07777, 0640);
	p = dpath(&v, "pax/named/file");
	s = slurp(p);
	assert_string_equal(s, "pax");
	free(s);
	free(p);
	p = dpath(&v, "ignored-name");
	assert_false(exists(p));
	free(p);
	p = dpath(&v, longname);
	s = slurp(p);
	assert_non_null(s);
	assert_string_equal(s, "long");
	free(s);
	free(p);
	p = dpath(&v, "dev/null");
	assert_false(exists(p));
	free(p);
	p = dpath(&v, "fifo");
	assert_false(exists(p));
	free(p);
	assert_int_equal(mode_of(&v, "suid") & 07777, 0755);
	env_check_free(&v);
	free(t.buf);
}

static void test_normal(void **state)
{
	(void)state;
	check_normal(false);
}

static void test_normal_walk(void **state)
{
	(void)state;
	check_normal(true);
}

static void test_keep_setid(void **state)
{
	struct env v;
	struct tb t = {0};
	struct lg_tar_opts o = {.keep_setid = true};
	struct lg_tar_stats st;
	struct lg_err *err = NULL;

	(void)state;
	env_new(&v);
	tb_file(&t, "suid", 06755, "s");
	tb_end(&t);
	assert_int_equal(run_extract(&v, &t, &o, &st, &err), 0);
	assert_int_equal(mode_of(&v, "suid") & 07777, 06755);
	assert_int_equal(st.setid_cleared, 0);
	env_check_free(&v);
	free(t.buf);
}

/* ---- hostile archives ---- */

struct hostile {
	const char *name;
	void (*build)(struct tb *t);
	bool ok;	 /* extracts (safely) rather than failing */
	bool walk_fails; /* the walk follows no symlink: fails where openat2 would not */
};

static char outside[256]; /* a name in /tmp that must never appear */

static void h_abs(struct tb *t)
{
	char name[300];
	snprintf(name, sizeof(name), "/%s", outside + 1);
	tb_file(t, name, 0644, "abs");
}

static void h_dotdot(struct tb *t)
{
	tb_file(t, "../x", 0644, "x");
}

static void h_dotdot_deep(struct tb *t)
{
	tb_file(t, "a/../../x", 0644, "x");
}

static void h_root_symlink(struct tb *t)
{
	char name[300];
	tb_link(t, "l", '2', "/");
	snprintf(name, sizeof(name), "l%s", outside);
	tb_file(t, name, 0644, "escaped");
}

static void h_up_symlink(struct tb *t)
{
	tb_link(t, "up", '2', "..");
	tb_file(t, "up/x", 0644, "escaped");
}

static void h_up_symlink_sentinel(struct tb *t)
{
	tb_link(t, "s", '2', "../sentinel");
	tb_file(t, "s/keep", 0644, "overwritten");
}

static void h_up_symlink_dir(struct tb *t)
{
	tb_link(t, "up", '2', "..");
	tb_dir(t, "up/newdir", 0755);
}

static void h_hardlink_passwd(struct tb *t)
{
	tb_link(t, "pw", '1', "/etc/passwd");
}

static void h_hardlink_outside(struct tb *t)
{
	tb_link(t, "o", '1', "../sentinel/keep");
}

static void h_hardlink_via_symlink(struct tb *t)
{
	tb_link(t, "s", '2', "../sentinel");
	tb_link(t, "o", '1', "s/keep");
}

static void h_hardlink_symlink(struct tb *t)
{
	tb_file(t, "f", 0644, "f");
	tb_link(t, "s", '2', "f");
	tb_link(t, "h", '1', "s");
}

static void h_hardlink_dir(struct tb *t)
{
	tb_dir(t, "d", 0755);
	tb_link(t, "h", '1', "d");
}

static void h_device(struct tb *t)
{
	tb_header(t, "dev/sda", '4', 0660, 0, NULL);
	tb_header(t, "dev/mem", '3', 0660, 0, NULL);
	tb_header(t, "fifo", '6', 0644, 0, NULL);
}

static void h_dup_symlink(struct tb *t)
{
	tb_link(t, "s", '2', "../sentinel/keep");
	tb_file(t, "s", 0644, "replaced");
}

static void h_dup_hardlink(struct tb *t)
{
	tb_file(t, "f", 0644, "original");
	tb_link(t, "h", '1', "f");
	tb_file(t, "h", 0644, "replaced");
}

static void h_file_over_dir(struct tb *t)
{
	tb_dir(t, "d", 0755);
	tb_file(t, "d/x", 0644, "x");
	tb_file(t, "d", 0644, "file");
}

static void h_dir_over_symlink(struct tb *t)
{
	tb_link(t, "d", '2', "../sentinel");
	tb_dir(t, "d", 0755);
	tb_file(t, "d/x", 0644, "x");
}

static void h_huge_size(struct tb *t)
{
	tb_header(t, "huge", '0', 0644, 1ull << 40, NULL);
	tb_raw(t, "abc", 3);
}

static void h_bad_checksum(struct tb *t)
{
	tb_file(t, "f", 0644, "data");
	t->buf[t->len - 1024] ^= 1; /* the name's first byte */
}

static void h_truncated_data(struct tb *t)
{
	tb_file(t, "f", 0644, "some data here");
	t->len -= 500;
}

static void h_truncated_end(struct tb *t)
{
	tb_file(t, "f", 0644, "data"); /* and no end blocks: run_hostile adds none */
}

static void h_pax_nul(struct tb *t)
{
	tb_pax_path(t, "path", "a\0b", 3);
	tb_file(t, "f", 0644, "x");
}

static void h_pax_huge(struct tb *t)
{
	char *big = xmalloc(5000);
	memset(big, 'a', 5000);
	tb_pax_path(t, "path", big, 5000);
	free(big);
	tb_file(t, "f", 0644, "x");
}

static void h_pax_lying_len(struct tb *t)
{
	tb_ext(t, 'x', "99999 path=x\n", 13);
	tb_file(t, "f", 0644, "x");
}

static void h_pax_short_len(struct tb *t)
{
	/* LEN 5 ends the record inside its own digits: no key at all. */
	tb_ext(t, 'x', "00005 path=x\n", 13);
	tb_file(t, "f", 0644, "x");
}

static void h_pax_zero_len(struct tb *t)
{
	/* LEN 0: the record's end would be before its start (found by fuzz-tar). */
	tb_ext(t, 'x', "0 a=\n", 5);
	tb_file(t, "f", 0644, "x");
}

static void h_negative_size(struct tb *t)
{
	tb_header(t, "neg", '0', 0644, 0, NULL);
	t->buf[t->len - 512 + 124] = 0xff; /* base-256, negative */
	tb_set_checksum(t->buf + t->len - 512);
}

static void h_pax_sparse(struct tb *t)
{
	tb_pax_path(t, "GNU.sparse.major", "1", 1);
	tb_file(t, "f", 0644, "x");
}

static void h_gnu_long(struct tb *t)
{
	char *big = xmalloc(5001);
	memset(big, 'a', 5000);
	big[5000] = '\0';
	tb_ext(t, 'L', big, 5001);
	free(big);
	tb_file(t, "f", 0644, "x");
}

static void h_sparse(struct tb *t)
{
	tb_header(t, "sparse", 'S', 0644, 0, NULL);
}

static void h_meta_chain(struct tb *t)
{
	for (int i = 0; i < 40; i++)
		tb_ext(t, 'g', "12 comment=\n", 12);
	tb_file(t, "f", 0644, "x");
}

static void h_lone_zero(struct tb *t)
{
	static const uint8_t zeros[512];
	tb_raw(t, zeros, 512);
	tb_file(t, "f", 0644, "x");
}

static void h_dot_entry_file(struct tb *t)
{
	tb_file(t, "./", 0644, "x");
}

static void h_proc_magic(struct tb *t)
{
	tb_link(t, "p", '2', "/proc/self/cwd");
	tb_file(t, "p/x", 0644, "x");
}

static const struct hostile hostile_cases[] = {
    {"absolute path", h_abs, true, false},
    {"../x", h_dotdot, false, false},
    {"a/../../x", h_dotdot_deep, false, false},
    {"l -> / then l/tmp/...", h_root_symlink, false, false},
    {"up -> .. then up/x", h_up_symlink, false, false},
    {"s -> ../sentinel then s/keep", h_up_symlink_sentinel, false, false},
    {"up -> .. then dir up/newdir", h_up_symlink_dir, false, false},
    {"hardlink to /etc/passwd", h_hardlink_passwd, false, false},
    {"hardlink to ../sentinel/keep", h_hardlink_outside, false, false},
    {"hardlink through a symlink out", h_hardlink_via_symlink, false, false},
    {"hardlink to a symlink", h_hardlink_symlink, false, false},
    {"hardlink to a directory", h_hardlink_dir, false, false},
    {"devices and fifo", h_device, true, false},
    {"file replaces a symlink", h_dup_symlink, true, false},
    {"file replaces a hard link", h_dup_hardlink, true, false},
    {"file over a directory", h_file_over_dir, false, false},
    {"directory over a symlink", h_dir_over_symlink, true, false},
    {"huge size field", h_huge_size, false, false},
    {"bad checksum", h_bad_checksum, false, false},
    {"truncated data", h_truncated_data, false, false},
    {"truncated end", h_truncated_end, false, false},
    {"pax path with NUL", h_pax_nul, false, false},
    {"pax path of 5000 bytes", h_pax_huge, false, false},
    {"pax record with a lying length", h_pax_lying_len, false, false},
    {"pax record shorter than its key", h_pax_short_len, false, false},
    {"pax record of length 0", h_pax_zero_len, false, false},
    {"negative base-256 size", h_negative_size, false, false},
    {"pax GNU.sparse", h_pax_sparse, false, false},
    {"GNU long name of 5000 bytes", h_gnu_long, false, false},
    {"GNU sparse entry", h_sparse, false, false},
    {"40 global headers", h_meta_chain, false, false},
    {"lone zero block", h_lone_zero, false, false},
    {"file named ./", h_dot_entry_file, false, false},
    {"p -> /proc/self/cwd then p/x", h_proc_magic, false, false},
};

static void run_hostile(bool walk)
{
	struct stat pw_before, pw_after;

	snprintf(outside, sizeof(outside), "/tmp/lg-test-tar-outside-%d", (int)getpid());
	assert_int_equal(stat("/etc/passwd", &pw_before), 0);
	for (size_t i = 0; i < ARRAY_SIZE(hostile_cases); i++) {
		const struct hostile *h = &hostile_cases[i];
		struct env v;
		struct tb t = {0};
		struct lg_tar_opts o = {.no_openat2 = walk};
		struct lg_tar_stats st;
		struct lg_err *err = NULL;
		int r;

		env_new(&v);
		h->build(&t);
		if (h->build != h_truncated_end && h->build != h_huge_size &&
		    h->build != h_truncated_data)
			tb_end(&t);
		r = run_extract(&v, &t, &o, &st, &err);
		print_message("%s (%s): %s\n", h->name, walk ? "walk" : "openat2",
			      err ? err->msg : "extracted");
		if (h->ok && !(walk && h->walk_fails)) {
			assert_int_equal(r, 0);
		} else {
			assert_true(r < 0);
			assert_non_null(err);
			assert_true(err->errnum > 0);
			assert_int_equal(r, -err->errnum);
			/* One line, printable. */
			for (const char *c = err->msg; *c; c++)
				assert_true(*c >= 0x20 && *c < 0x7f);
		}
		lg_err_free(&err);
		assert_false(exists(outside));
		env_check_free(&v);
		free(t.buf);
	}
	assert_int_equal(stat("/etc/passwd", &pw_after), 0);
	assert_int_equal(pw_before.st_nlink, pw_after.st_nlink);
	assert_int_equal(pw_before.st_ctime, pw_after.st_ctime);
}

static void test_hostile_openat2(void **state)
{
	(void)state;
	run_hostile(false);
}

static void test_hostile_walk(void **state)
{
	(void)state;
	run_hostile(true);
}

/* What the accepted hostile cases left in dest. */
static void test_hostile_results(void **state)
{
	struct env v;
	struct tb t = {0};
	struct lg_tar_stats st;
	struct lg_err *err = NULL;
	char *p, *s;

	(void)state;
	snprintf(outside, sizeof(outside), "/tmp/lg-test-tar-outside-%d", (int)getpid());
	env_new(&v);
	h_abs(&t);
	h_device(&t);
	h_dup_symlink(&t);
	h_dup_hardlink(&t);
	/* A directory twice: the later mode wins, whatever comes between. */
	tb_dir(&t, "dd", 0700);
	tb_dir(&t, "ee", 0755);
	tb_dir(&t, "dd", 0750);
	tb_end(&t);
	assert_int_equal(run_extract(&v, &t, NULL, &st, &err), 0);
	p = dpath(&v, outside + 1);
	s = slurp(p);
	assert_string_equal(s, "abs");
	free(s);
	free(p);
	assert_int_equal(st.skipped_special, 3);
	assert_true(S_ISREG(mode_of(&v, "s")));
	p = dpath(&v, "s");
	s = slurp(p);
	assert_string_equal(s, "replaced");
	free(s);
	free(p);
	/* The other name of the replaced hard link keeps its old content. */
	p = dpath(&v, "f");
	s = slurp(p);
	assert_string_equal(s, "original");
	free(s);
	free(p);
	assert_int_equal(mode_of(&v, "dd") & 07777, 0750);
	p = dpath(&v, "dev");
	assert_false(exists(p));
	free(p);
	env_check_free(&v);
	free(t.buf);
}

static void test_limits(void **state)
{
	struct env v;
	struct tb t = {0};
	struct lg_tar_opts o = {.max_total_bytes = 100};
	struct lg_err *err = NULL;
	char data[80];

	(void)state;
	memset(data, 'd', sizeof(data) - 1);
	data[sizeof(data) - 1] = '\0';
	env_new(&v);
	tb_file(&t, "a", 0644, data);
	tb_file(&t, "b", 0644, data);
	tb_end(&t);
	assert_int_equal(run_extract(&v, &t, &o, NULL, &err), -EFBIG);
	assert_non_null(strstr(err->msg, "`b`"));
	lg_err_free(&err);
	env_check_free(&v);

	env_new(&v);
	o = (struct lg_tar_opts){.max_entries = 1};
	assert_int_equal(run_extract(&v, &t, &o, NULL, &err), -E2BIG);
	lg_err_free(&err);
	env_check_free(&v);
	free(t.buf);

	/* A destination that is not empty is refused. */
	env_new(&v);
	t = (struct tb){0};
	tb_end(&t);
	char *p = dpath(&v, "already");
	assert_int_equal(mkdir(p, 0755), 0);
	assert_int_equal(run_extract(&v, &t, NULL, NULL, &err), -ENOTEMPTY);
	lg_err_free(&err);
	assert_int_equal(rmdir(p), 0);
	free(p);
	/* An empty archive is fine. */
	assert_int_equal(run_extract(&v, &t, NULL, NULL, &err), 0);
	env_check_free(&v);
	free(t.buf);
}

/* ---- the reader alone ---- */

struct mem {
	const uint8_t *p;
	size_t n, off, step;
};

static ssize_t mem_read(void *ctx, void *buf, size_t n)
{
	struct mem *m = ctx;
	size_t k = m->n - m->off;

	if (k > n)
		k = n;
	if (m->step && k > m->step)
		k = m->step; /* short reads */
	memcpy(buf, m->p + m->off, k);
	m->off += k;
	return (ssize_t)k;
}

static void test_reader(void **state)
{
	struct tb t = {0};
	struct mem m;
	struct lg_tar_reader *r;
	struct lg_tar_entry e;
	struct lg_err *err = NULL;
	char buf[64];
	uint8_t h[512];

	(void)state;
	tb_file(&t, "one", 0644, "first");
	tb_file(&t, "two", 0600, "second");
	/* A v7-style header with a base-256 uid and a signed-sum checksum. */
	memset(h, 0, sizeof(h));
	memcpy(h, "three\xff", 6);
	tb_octal(h + 100, 8, 0755);
	h[108] = 0x80;
	h[115] = 7;
	tb_octal(h + 116, 8, 0);
	tb_octal(h + 124, 12, 0);
	h[156] = '5';
	{
		int sum = 0;
		memset(h + 148, ' ', 8);
		for (int i = 0; i < 512; i++)
			sum += (int8_t)h[i];
		snprintf((char *)h + 148, 8, "%06o", sum);
	}
	tb_raw(&t, h, 512);
	tb_end(&t);
	tb_raw(&t, "trailing garbage", 16);

	m = (struct mem){.p = t.buf, .n = t.len, .step = 7};
	r = lg_tar_reader_new(mem_read, &m);
	assert_int_equal(lg_tar_next(r, &e, &err), 1);
	assert_string_equal(e.path, "one");
	assert_int_equal(e.type, LG_TAR_FILE);
	assert_int_equal(e.size, 5);
	assert_int_equal(e.uid, 1000);
	/* The data is skipped when not read. */
	assert_int_equal(lg_tar_next(r, &e, &err), 1);
	assert_string_equal(e.path, "two");
	assert_int_equal(e.mode, 0600);
	assert_int_equal(lg_tar_read_data(r, buf, sizeof(buf), &err), 6);
	assert_memory_equal(buf, "second", 6);
	assert_int_equal(lg_tar_read_data(r, buf, sizeof(buf), &err), 0);
	assert_int_equal(lg_tar_next(r, &e, &err), 1);
	assert_string_equal(e.path, "three\xff");
	assert_int_equal(e.type, LG_TAR_DIR);
	assert_int_equal(e.uid, 7);
	assert_int_equal(lg_tar_next(r, &e, &err), 0);
	assert_null(err);
	lg_tar_reader_free(r);

	/* Cut anywhere before the end blocks are whole: an error, never a clean end. */
	for (size_t cut = 0; cut < t.len - 16; cut += 37) {
		int ret;
		m = (struct mem){.p = t.buf, .n = cut};
		r = lg_tar_reader_new(mem_read, &m);
		while ((ret = lg_tar_next(r, &e, &err)) == 1)
			;
		assert_true(ret < 0);
		assert_non_null(err);
		lg_err_free(&err);
		lg_tar_reader_free(r);
	}
	free(t.buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reader),	    cmocka_unit_test(test_normal),
	    cmocka_unit_test(test_normal_walk),	    cmocka_unit_test(test_keep_setid),
	    cmocka_unit_test(test_hostile_openat2), cmocka_unit_test(test_hostile_walk),
	    cmocka_unit_test(test_hostile_results), cmocka_unit_test(test_limits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
