/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for src/image/rootfs.c: small tarballs built in memory (plain,
 * gzip, xz, zstd) become erofs images whose contents are read back with
 * `fsck.erofs --extract`; hostile tarballs give either a correct image without
 * the hostile effect or a one-line error, and after every failure the work
 * directory and the output are gone and a sentinel beside them untouched.
 * The non-root path runs in a child that drops to uid 65534 (no subordinate
 * ids: the root-only user namespace).  One test runs mmdebstrap for real
 * (skipped without it or without the mirror) with a spec whose file path,
 * environment and command hold quotes and $(...).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/env.h"
#include "common/err.h"
#include "common/util.h"
#include "image/rootfs.h"
#include "image/spec.h"
#include "tarbuild.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- a tiny tar writer (tarbuild.h), with owners ---- */

static void tb_header(struct tb *t, const char *name, char type, unsigned mode, uint64_t size,
		      const char *link, unsigned uid, unsigned gid)
{
	tb_header_ids(t, name, type, mode, size, link, uid, gid);
}

static void tb_file(struct tb *t, const char *name, unsigned mode, unsigned uid, unsigned gid,
		    const char *data)
{
	tb_header(t, name, '0', mode, strlen(data), NULL, uid, gid);
	tb_raw(t, data, strlen(data));
	tb_pad(t);
}

static void tb_dir(struct tb *t, const char *name, unsigned mode)
{
	tb_header(t, name, '5', mode, 0, NULL, 0, 0);
}

static void tb_link(struct tb *t, const char *name, char type, const char *target)
{
	tb_header(t, name, type, 0777, 0, target, 0, 0);
}

static void tb_end(struct tb *t)
{
	static const uint8_t zeros[10240]; /* two end blocks and a record's padding, like tar */
	tb_raw(t, zeros, sizeof(zeros));
}

/* ---- places ---- */

struct place {
	char *base;	/* holds work/, out.erofs, sentinel/ and the tar */
	char *work;	/* lg_rootfs_from_tar's work_dir (must not exist) */
	char *out;	/* the erofs */
	char *sentinel; /* a directory with one file that nothing may touch */
	char *tar;
};

static void place_new(struct place *p)
{
	char tmpl[] = "/tmp/lg-test-rootfs-XXXXXX";

	assert_non_null(mkdtemp(tmpl));
	assert_int_equal(chmod(tmpl, 0755), 0);
	p->base = xstrdup(tmpl);
	p->work = xasprintf("%s/work", tmpl);
	p->out = xasprintf("%s/out.erofs", tmpl);
	p->sentinel = xasprintf("%s/sentinel", tmpl);
	p->tar = xasprintf("%s/in.tar", tmpl);
	assert_int_equal(mkdir(p->sentinel, 0755), 0);
	char *f = xasprintf("%s/keep", p->sentinel);
	FILE *fp = fopen(f, "w");
	assert_non_null(fp);
	fputs("untouched\n", fp);
	fclose(fp);
	free(f);
}

static char *read_text(const char *path)
{
	FILE *f = fopen(path, "re");
	char *buf = xzalloc(65536);

	if (f == NULL) {
		free(buf);
		return NULL;
	}
	size_t n = fread(buf, 1, 65535, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

/* The sentinel holds exactly its file with its text; work_dir and out are gone, and nothing
 * named after out (a temporary) is left. */
static void assert_clean(struct place *p, bool out_expected)
{
	struct stat sb;
	char *f = xasprintf("%s/keep", p->sentinel);
	char *t = read_text(f);
	DIR *d;
	struct dirent *de;
	int n = 0;

	assert_non_null(t);
	assert_string_equal(t, "untouched\n");
	free(t);
	free(f);
	d = opendir(p->sentinel);
	assert_non_null(d);
	while ((de = readdir(d)))
		n++;
	closedir(d);
	assert_int_equal(n, 3);
	assert_int_equal(lstat(p->work, &sb), -1);
	assert_int_equal(lstat(p->out, &sb), out_expected ? 0 : -1);
	d = opendir(p->base);
	assert_non_null(d);
	while ((de = readdir(d)))
		assert_null(strstr(de->d_name, ".tmp-"));
	closedir(d);
}

static void place_free(struct place *p)
{
	assert_int_equal(lg_rm_rf(p->base), 0);
	free(p->base);
	free(p->work);
	free(p->out);
	free(p->sentinel);
	free(p->tar);
}

static bool have(const char *prog)
{
	char *cmd = xasprintf("command -v %s >/dev/null 2>&1", prog);
	int r = system(cmd);
	free(cmd);
	return r == 0;
}

/* Writes the archive to p->tar, compressed with prog ("gzip", "xz", "zstd" or NULL). */
static void write_tar(struct place *p, const struct tb *t, const char *prog)
{
	char *plain = xasprintf("%s/plain.tar", p->base);
	int fd = open(plain, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(lg_write_all(fd, t->buf, t->len), (ssize_t)t->len);
	close(fd);
	if (prog) {
		char *cmd = xasprintf("%s -q -c < '%s' > '%s'", prog, plain, p->tar);
		assert_int_equal(system(cmd), 0);
		free(cmd);
		unlink(plain);
	} else {
		assert_int_equal(rename(plain, p->tar), 0);
	}
	free(plain);
}

/* Extracts the erofs image into a new directory (owners kept when root). */
static char *extract_image(struct place *p)
{
	char *dir = xasprintf("%s/check", p->base);
	char *cmd = xasprintf("fsck.erofs --extract='%s' %s '%s' >/dev/null 2>&1", dir,
			      geteuid() == 0 ? "--preserve" : "", p->out);

	assert_int_equal(system(cmd), 0);
	free(cmd);
	return dir;
}

static void assert_file(const char *dir, const char *rel, const char *text, unsigned mode, int uid,
			int gid)
{
	char *path = xasprintf("%s/%s", dir, rel);
	struct stat sb;
	char *t;

	assert_int_equal(lstat(path, &sb), 0);
	assert_true(S_ISREG(sb.st_mode));
	/* fsck.erofs keeps owners and setid bits only for root. */
	if (geteuid() == 0)
		assert_int_equal(sb.st_mode & 07777, mode);
	else
		assert_int_equal(sb.st_mode & 0777, mode & 0777);
	if (uid >= 0 && geteuid() == 0)
		assert_int_equal(sb.st_uid, (uid_t)uid);
	if (gid >= 0 && geteuid() == 0)
		assert_int_equal(sb.st_gid, (gid_t)gid);
	t = read_text(path);
	assert_non_null(t);
	assert_string_equal(t, text);
	free(t);
	free(path);
}

static void assert_absent(const char *dir, const char *rel)
{
	char *path = xasprintf("%s/%s", dir, rel);
	struct stat sb;

	assert_int_equal(lstat(path, &sb), -1);
	free(path);
}

static const char dpkg_status[] = "Package: a\nStatus: install ok installed\nVersion: 1\n\n"
				  "Package: b\nStatus: deinstall ok config-files\n\n"
				  "Package: c\nStatus: install ok installed\n";

static void normal_tree(struct tb *t)
{
	tb_dir(t, "./", 0755);
	tb_dir(t, "./etc/", 0755);
	tb_file(t, "./etc/hello", 0640, 0, 42, "hello\n");
	tb_dir(t, "./usr/", 0755);
	tb_dir(t, "./usr/bin/", 0755);
	tb_file(t, "./usr/bin/tool", 0755, 1000, 1000, "#!/bin/sh\necho tool\n");
	tb_link(t, "./bin", '2', "usr/bin");
	tb_link(t, "./usr/bin/tool2", '1', "usr/bin/tool");
	tb_dir(t, "./var/", 0755);
	tb_dir(t, "./var/lib/", 0755);
	tb_dir(t, "./var/lib/dpkg/", 0755);
	tb_file(t, "./var/lib/dpkg/status", 0644, 0, 0, dpkg_status);
	tb_end(t);
}

static void check_normal_image(struct place *p, bool owners)
{
	char *dir = extract_image(p);
	char link[64] = {0};
	char *bin = xasprintf("%s/bin", dir);

	assert_file(dir, "etc/hello", "hello\n", 0640, 0, owners ? 42 : 0);
	assert_file(dir, "usr/bin/tool", "#!/bin/sh\necho tool\n", 0755, owners ? 1000 : 0,
		    owners ? 1000 : 0);
	assert_file(dir, "usr/bin/tool2", "#!/bin/sh\necho tool\n", 0755, -1, -1);
	assert_int_equal(readlink(bin, link, sizeof(link) - 1), 7);
	assert_string_equal(link, "usr/bin");
	free(bin);
	free(dir);
}

static void run_format(const char *prog, const char *compress)
{
	struct place p;
	struct tb t = {0};
	struct lg_rootfs_stats st = {0};
	struct lg_rootfs_opts o = {.compress = compress};
	struct lg_err *err = NULL;
	struct stat sb;

	if (prog && !have(prog)) {
		print_message("no %s: skipping that format\n", prog);
		return;
	}
	place_new(&p);
	normal_tree(&t);
	write_tar(&p, &t, prog);
	int ret = lg_rootfs_from_tar(p.tar, p.work, p.out, &o, &st, &err);
	if (ret < 0)
		fail_msg("%s: %s", prog ? prog : "plain", err->msg);
	assert_int_equal(st.packages, 2);
	assert_int_equal(st.entries, 12);
	assert_int_equal(st.bytes, 6 + 20 + sizeof(dpkg_status) - 1);
	/* Without root it depends on the user's subordinate ids: test_nonroot covers it. */
	if (geteuid() == 0)
		assert_true(st.owners_kept);
	assert_int_equal(stat(p.out, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0644);
	assert_int_equal((uint64_t)sb.st_size, st.image_size);
	assert_clean(&p, true);
	check_normal_image(&p, geteuid() == 0);
	place_free(&p);
	free(t.buf);
}

static void test_formats(void **state)
{
	(void)state;
	if (!have("mkfs.erofs") || !have("fsck.erofs"))
		skip();
	run_format(NULL, NULL);
	run_format("gzip", NULL);
	run_format("xz", NULL);
	run_format("zstd", NULL);
	run_format("gzip", "none");
}

/* A hostile archive that must fail: one line, nothing left, the sentinel untouched. */
static void expect_failure(struct tb *t, const char *prog, const char *needle)
{
	struct place p;
	struct lg_err *err = NULL;

	place_new(&p);
	/* The sentinel's path, for archives that aim at it, is fixed by the caller's "%s". */
	write_tar(&p, t, prog);
	assert_true(lg_rootfs_from_tar(p.tar, p.work, p.out, NULL, NULL, &err) < 0);
	assert_non_null(err);
	assert_null(strchr(err->msg, '\n'));
	if (needle && strstr(err->msg, needle) == NULL)
		fail_msg("\"%s\" does not say \"%s\"", err->msg, needle);
	lg_err_free(&err);
	assert_clean(&p, false);
	place_free(&p);
}

static void test_hostile(void **state)
{
	(void)state;
	if (!have("mkfs.erofs") || !have("fsck.erofs"))
		skip();

	/* An absolute symlink, then a file written through it. */
	struct tb a = {0};
	tb_link(&a, "escape", '2', "/tmp");
	tb_file(&a, "escape/lg-test-rootfs-pwned", 0644, 0, 0, "pwned\n");
	tb_end(&a);
	expect_failure(&a, NULL, "escape/lg-test-rootfs-pwned");
	assert_int_equal(access("/tmp/lg-test-rootfs-pwned", F_OK), -1);
	free(a.buf);

	/* A symlink to a directory up, then a file through it. */
	struct tb b = {0};
	tb_link(&b, "up", '2', "../../..");
	tb_file(&b, "up/tmp/lg-test-rootfs-pwned", 0644, 0, 0, "pwned\n");
	/* 2 MiB more, so gzip is still writing when the extraction stops: it must die of the
	 * closed pipe, not report "Broken pipe" as if the archive were damaged. */
	tb_header(&b, "after", '0', 0644, 2 << 20, NULL, 0, 0);
	char *big = xzalloc(2 << 20);
	tb_raw(&b, big, 2 << 20);
	free(big);
	tb_end(&b);
	expect_failure(&b, "gzip", "up/tmp");
	assert_int_equal(access("/tmp/lg-test-rootfs-pwned", F_OK), -1);
	free(b.buf);

	/* A ".." in a name. */
	struct tb c = {0};
	tb_file(&c, "a/../../lg-test-rootfs-pwned", 0644, 0, 0, "pwned\n");
	tb_end(&c);
	expect_failure(&c, "xz", "lg-test-rootfs-pwned");
	free(c.buf);

	/* Not a tar at all. */
	struct tb d = {0};
	tb_raw(&d, "this is not a tar archive, just text\n", 37);
	tb_pad(&d);
	expect_failure(&d, NULL, NULL);
	free(d.buf);
}

/* Hostile entries that are made harmless, not refused: the image is right without them. */
static void test_hostile_harmless(void **state)
{
	struct place p;
	struct tb t = {0};
	struct lg_rootfs_stats st = {0};
	struct lg_err *err = NULL;
	(void)state;

	if (!have("mkfs.erofs") || !have("fsck.erofs"))
		skip();
	place_new(&p);
	tb_dir(&t, "dev/", 0755);
	tb_header(&t, "dev/sda", '4', 0666, 0, NULL, 0, 0); /* block device */
	tb_header(&t, "dev/mem", '3', 0666, 0, NULL, 0, 0); /* character device */
	tb_header(&t, "fifo", '6', 0666, 0, NULL, 0, 0);
	tb_file(&t, "su", 04755, 0, 0, "setuid\n");
	tb_dir(&t, "var/", 0755);
	tb_dir(&t, "var/lib/", 0755);
	tb_dir(&t, "var/lib/dpkg/", 0755);
	/* The package count must not follow a symlink out of the tree. */
	tb_link(&t, "var/lib/dpkg/status", '2', "/var/lib/dpkg/status");
	/* The same name twice: the later entry replaces a symlink, never writes through it. */
	tb_link(&t, "passwd", '2', "/etc/passwd");
	tb_file(&t, "passwd", 0644, 0, 0, "root:x:0:0::/root:/bin/sh\n");
	tb_end(&t);
	write_tar(&p, &t, "zstd");
	if (lg_rootfs_from_tar(p.tar, p.work, p.out, NULL, &st, &err) < 0)
		fail_msg("%s", err->msg);
	assert_int_equal(st.skipped_special, 3);
	assert_int_equal(st.packages, 0);
	assert_int_equal(st.setid_cleared, 0);
	assert_clean(&p, true);
	char *dir = extract_image(&p);
	assert_absent(dir, "dev/sda");
	assert_absent(dir, "dev/mem");
	assert_absent(dir, "fifo");
	assert_file(dir, "su", "setuid\n", 0755, -1, -1);
	/* The setuid bit is kept by design (docs/images.md: it means something only to the
	 * guest).  fsck.erofs and dump.erofs 1.5 drop it in what they show: a mount tells. */
	char *mnt = xasprintf("%s/mnt", p.base), *su = xasprintf("%s/su", mnt);
	char *cmd = xasprintf("mount -o loop,ro,nosuid,nodev '%s' '%s' 2>/dev/null", p.out, mnt);
	struct stat sb;
	assert_int_equal(mkdir(mnt, 0700), 0);
	if (geteuid() == 0 && system(cmd) == 0) {
		int r = stat(su, &sb);
		umount(mnt);
		assert_int_equal(r, 0);
		assert_int_equal(sb.st_mode & 07777, 04755);
	} else {
		print_message(
		    "cannot mount the image (needs root and loop devices): setuid bit unchecked\n");
	}
	rmdir(mnt);
	free(cmd);
	free(su);
	free(mnt);
	assert_file(dir, "passwd", "root:x:0:0::/root:/bin/sh\n", 0644, -1, -1);
	free(dir);
	place_free(&p);
	free(t.buf);
}

/* A .gz cut short: inside the data (the tar reader sees the end) and in gzip's trailer (the tar
 * is whole; only gzip's exit status tells). */
static void test_truncated(void **state)
{
	(void)state;
	if (!have("mkfs.erofs") || !have("gzip"))
		skip();
	for (int cut = 0; cut < 2; cut++) {
		struct place p;
		struct tb t = {0};
		struct stat sb;
		struct lg_err *err = NULL;

		place_new(&p);
		normal_tree(&t);
		write_tar(&p, &t, "gzip");
		assert_int_equal(stat(p.tar, &sb), 0);
		assert_int_equal(truncate(p.tar, cut == 0 ? sb.st_size / 2 : sb.st_size - 4), 0);
		assert_true(lg_rootfs_from_tar(p.tar, p.work, p.out, NULL, NULL, &err) < 0);
		assert_null(strchr(err->msg, '\n'));
		/* Both times gzip's own complaint is the cause named, not the tar's truncation. */
		if (strstr(err->msg, "decompressing") == NULL || strstr(err->msg, "gzip") == NULL)
			fail_msg("\"%s\" does not name the decompressor", err->msg);
		lg_err_free(&err);
		assert_clean(&p, false);
		place_free(&p);
		free(t.buf);
	}
}

static void test_refusals(void **state)
{
	struct place p;
	struct tb t = {0};
	struct lg_err *err = NULL;
	struct lg_rootfs_opts bad = {.compress = "zip"};
	char *path = getenv("PATH") ? xstrdup(getenv("PATH")) : NULL;
	(void)state;

	if (!have("mkfs.erofs"))
		skip();
	place_new(&p);
	normal_tree(&t);
	write_tar(&p, &t, NULL);

	/* out_path exists: refused, and the file is left as it was. */
	int fd = open(p.out, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "x", 1), 1);
	close(fd);
	assert_int_equal(lg_rootfs_from_tar(p.tar, p.work, p.out, NULL, NULL, &err), -EEXIST);
	lg_err_free(&err);
	char *x = read_text(p.out);
	assert_string_equal(x, "x");
	free(x);
	unlink(p.out);

	/* work_dir exists: refused, and not removed. */
	assert_int_equal(mkdir(p.work, 0700), 0);
	assert_int_equal(lg_rootfs_from_tar(p.tar, p.work, p.out, NULL, NULL, &err), -EEXIST);
	lg_err_free(&err);
	assert_int_equal(rmdir(p.work), 0);

	assert_int_equal(lg_rootfs_from_tar(p.tar, p.work, p.out, &bad, NULL, &err), -EINVAL);
	assert_non_null(strstr(err->msg, "lz4hc"));
	lg_err_free(&err);

	/* No mkfs.erofs, no mmdebstrap: the message names the fix. */
	setenv("PATH", "/nonexistent", 1);
	lg_env_reload();
	assert_true(lg_rootfs_from_tar(p.tar, p.work, p.out, NULL, NULL, &err) < 0);
	assert_non_null(strstr(err->msg, "install erofs-utils"));
	lg_err_free(&err);
	struct lg_debian_opts dop = {.suite = "bookworm"};
	char *tar2 = xasprintf("%s/deb.tar", p.base);
	assert_true(lg_rootfs_debian(&dop, tar2, &err) < 0);
	assert_non_null(strstr(err->msg, "apt-get install mmdebstrap"));
	lg_err_free(&err);
	if (path)
		setenv("PATH", path, 1);
	else
		unsetenv("PATH");
	lg_env_reload();

	/* A package name that would be an option or a second list item. */
	const char *const pk[] = {"python3,evil", NULL};
	struct lg_debian_opts dop2 = {.suite = "bookworm", .packages = pk};
	if (have("mmdebstrap")) {
		assert_int_equal(lg_rootfs_debian(&dop2, tar2, &err), -EINVAL);
		lg_err_free(&err);
	}
	assert_int_equal(access(tar2, F_OK), -1);
	free(tar2);
	assert_clean(&p, false);
	place_free(&p);
	free(t.buf);
	free(path);
}

/*
 * In a forked child of a root test: become uid 65534 as if logged in (dumpable, no groups).
 * With subids, first give 65534 the subordinate range 200000-265535 in a private mount
 * namespace (a file bound over /etc/subuid and /etc/subgid, which newuidmap then reads), so
 * the host's files are never changed.  Returns 0, 1 when subids cannot be set up, -1 on error.
 */
static int become_nobody(const char *base, bool subids)
{
	if (subids) {
		char *f = xasprintf("%s/subid", base);
		FILE *fp = fopen(f, "w");
		int r = 0;
		if (fp == NULL)
			return -1;
		fputs("nobody:200000:65536\n", fp);
		fclose(fp);
		if (access("/etc/subuid", F_OK) < 0 || access("/etc/subgid", F_OK) < 0 ||
		    !have("newuidmap") || !have("newgidmap"))
			r = 1;
		else if (unshare(CLONE_NEWNS) < 0 ||
			 mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
			 mount(f, "/etc/subuid", NULL, MS_BIND, NULL) < 0 ||
			 mount(f, "/etc/subgid", NULL, MS_BIND, NULL) < 0)
			r = -1;
		free(f);
		if (r)
			return r;
	}
	if (setgroups(0, NULL) < 0 || setresgid(65534, 65534, 65534) < 0 ||
	    setresuid(65534, 65534, 65534) < 0)
		return -1;
	/* As after an exec by that user: the id change made us non-dumpable, which leaves
	 * /proc/self/uid_map to the real root. */
	return prctl(PR_SET_DUMPABLE, 1) < 0 ? -1 : 0;
}

/*
 * Without root: a child drops to uid 65534.  Without subordinate ids the import takes the
 * root-only user namespace (owners_kept false, every file root's in the image) and mmdebstrap
 * is refused with the usermod line; with them (a private /etc/subuid) the namespace maps the
 * range through newuidmap and the owners land in the image.  A hostile archive's error
 * crosses the namespace whole, and nothing is left.
 */
static void nonroot_round(bool subids)
{
	struct place p;
	struct tb t = {0};

	place_new(&p);
	normal_tree(&t);
	write_tar(&p, &t, "gzip");
	char *dir = xasprintf("%s/nobody", p.base);
	assert_int_equal(mkdir(dir, 0755), 0);
	assert_int_equal(chown(dir, 65534, 65534), 0);
	char *work = xasprintf("%s/work", dir), *out = xasprintf("%s/out.erofs", dir);
	char *deb = xasprintf("%s/deb.tar", dir);
	char *bad = xasprintf("%s/bad.tar", p.base);
	struct tb b = {0};
	tb_link(&b, "escape", '2', "/tmp");
	tb_file(&b, "escape/lg-test-rootfs-pwned", 0644, 0, 0, "pwned\n");
	tb_end(&b);
	int bfd = open(bad, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	assert_true(bfd >= 0);
	assert_int_equal(lg_write_all(bfd, b.buf, b.len), (ssize_t)b.len);
	close(bfd);
	free(b.buf);
	int rep[2];
	assert_int_equal(pipe(rep), 0);

	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct lg_rootfs_stats st = {0};
		struct lg_err *err = NULL;
		char msg[512] = "";

		close(rep[0]);
		int r = become_nobody(p.base, subids);
		if (r != 0)
			snprintf(msg, sizeof(msg),
				 r > 0 ? "skip: no /etc/subuid or newuidmap" : "setup: %m");
		else if (lg_rootfs_from_tar(p.tar, work, out, NULL, &st, &err) < 0)
			snprintf(msg, sizeof(msg), "import: %s", err->msg);
		else if (st.owners_kept != subids || st.packages != 2)
			snprintf(msg, sizeof(msg), "owners_kept %d packages %u", st.owners_kept,
				 st.packages);
		lg_err_free(&err);
		if (msg[0] == '\0' && (lg_rootfs_from_tar(bad, work, deb, NULL, NULL, &err) == 0 ||
				       strstr(err->msg, "escape/lg-test-rootfs-pwned") == NULL ||
				       access(work, F_OK) == 0 || access(deb, F_OK) == 0))
			snprintf(msg, sizeof(msg), "hostile import: %s",
				 err ? err->msg : "succeeded");
		lg_err_free(&err);
		if (msg[0] == '\0' && !subids && have("mmdebstrap")) {
			struct lg_debian_opts o = {.suite = "bookworm"};
			if (lg_rootfs_debian(&o, deb, &err) != -EPERM ||
			    !strstr(err->msg, "usermod --add-subuids"))
				snprintf(msg, sizeof(msg), "mmdebstrap: %s",
					 err ? err->msg : "no error");
			lg_err_free(&err);
		}
		if (write(rep[1], msg, strlen(msg)) < 0)
			_exit(3);
		_exit(0);
	}
	close(rep[1]);
	char msg[512] = "";
	ssize_t n = read(rep[0], msg, sizeof(msg) - 1);
	close(rep[0]);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	if (n > 0) {
		msg[n] = '\0';
		/* A kernel without unprivileged user namespaces cannot take this path at all. */
		if (strncmp(msg, "skip:", 5) == 0 || strstr(msg, "unshare(CLONE_NEWUSER)")) {
			print_message("subids %d: %s\n", subids, msg);
		} else {
			fail_msg("subids %d: %s", subids, msg);
		}
	} else {
		struct stat sb;
		assert_int_equal(lstat(work, &sb), -1);
		assert_int_equal(lstat(deb, &sb), -1);
		assert_int_equal(stat(out, &sb), 0);
		assert_int_equal(sb.st_uid, 65534);
		free(p.out);
		p.out = xstrdup(out);
		check_normal_image(&p, subids);
	}
	free(dir);
	free(work);
	free(out);
	free(deb);
	free(bad);
	place_free(&p);
	free(t.buf);
}

/*
 * Whether an unprivileged user may create a user namespace here: not in a
 * chroot (the kernel refuses CLONE_NEWUSER to a chrooted caller), nor
 * where a sysctl or an outer seccomp profile forbids it.  Then the
 * non-root path cannot run at all, and its test says so and skips.
 */
static bool nobody_can_unshare(void)
{
	int status;
	pid_t pid = fork();

	if (pid == 0) {
		if (setgroups(0, NULL) < 0 || setresgid(65534, 65534, 65534) < 0 ||
		    setresuid(65534, 65534, 65534) < 0)
			_exit(2);
		_exit(unshare(CLONE_NEWUSER) == 0 ? 0 : 1);
	}
	return pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
	       WEXITSTATUS(status) == 0;
}

static void test_nonroot(void **state)
{
	(void)state;
	if (geteuid() != 0 || !have("mkfs.erofs") || !have("fsck.erofs") || !have("gzip"))
		skip();
	if (!nobody_can_unshare()) {
		print_message("an unprivileged user cannot create a user namespace here (a "
			      "chroot, or disabled): skipping the non-root import\n");
		skip();
	}
	nonroot_round(false);
	nonroot_round(true);
}

/*
 * ^C during an import (as uid 65534 when root: the worker is a child in a user namespace):
 * the caller catches SIGINT as the CLI does, the whole process group gets it, and nothing may
 * be left: no work directory, no image, no temporary.  Whether the signal lands in the
 * extraction or in mkfs.erofs depends on timing; both must end clean.
 */
static void on_sigint(int sig)
{
	(void)sig;
}

static void test_interrupted(void **state)
{
	struct place p;
	struct tb t = {0};
	(void)state;

	if (!have("mkfs.erofs") || !have("gzip"))
		skip();
	place_new(&p);
	/* 40000 small files: a small .gz that takes a while to extract and to pack. */
	for (int d = 0; d < 100; d++) {
		char name[64];
		snprintf(name, sizeof(name), "d%d/", d);
		tb_dir(&t, name, 0755);
		for (int f = 0; f < 400; f++) {
			snprintf(name, sizeof(name), "d%d/f%d", d, f);
			tb_file(&t, name, 0644, 0, 0, name);
		}
	}
	tb_end(&t);
	write_tar(&p, &t, "gzip");
	assert_int_equal(chmod(p.base, 0777), 0);

	int rep[2];
	assert_int_equal(pipe(rep), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct lg_err *err = NULL;
		char msg[512] = "ok";

		close(rep[0]);
		/* As the CLI (src/cli/signals.c): ^C only sets a flag. */
		struct sigaction sa = {.sa_handler = on_sigint, .sa_flags = SA_RESTART};
		sigaction(SIGINT, &sa, NULL);
		if (setpgid(0, 0) < 0)
			_exit(2);
		if (geteuid() == 0 &&
		    (setgroups(0, NULL) < 0 || setresgid(65534, 65534, 65534) < 0 ||
		     setresuid(65534, 65534, 65534) < 0 || prctl(PR_SET_DUMPABLE, 1) < 0))
			_exit(2);
		if (write(rep[1], "s", 1) != 1)
			_exit(3);
		if (lg_rootfs_from_tar(p.tar, p.work, p.out, NULL, NULL, &err) < 0)
			snprintf(msg, sizeof(msg), "%s", err->msg);
		if (write(rep[1], msg, strlen(msg)) < 0)
			_exit(3);
		_exit(0);
	}
	close(rep[1]);
	char msg[512] = "";
	assert_int_equal(read(rep[0], msg, 1), 1);
	usleep(200 * 1000);
	kill(-pid, SIGINT);
	ssize_t n = read(rep[0], msg, sizeof(msg) - 1);
	close(rep[0]);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_true(n > 0);
	msg[n] = '\0';
	print_message("interrupted import: %s\n", msg);
	if (strcmp(msg, "ok") == 0) {
		unlink(p.out); /* it finished before the signal */
	} else {
		assert_null(strchr(msg, '\n'));
	}
	assert_clean(&p, false);
	place_free(&p);
	free(t.buf);
}

static void test_host_suite(void **state)
{
	(void)state;
	char *s = lg_host_suite();
	char *osr = read_text("/etc/os-release");

	if (osr && strstr(osr, "VERSION_CODENAME=")) {
		assert_non_null(s);
		char *want = xasprintf("VERSION_CODENAME=%s\n", s);
		assert_non_null(strstr(osr, want));
		free(want);
	}
	free(s);
	free(osr);
}

/* Whether deb.debian.org answers on port 80 within 3 s. */
static bool mirror_reachable(void)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	bool ok = false;

	if (getaddrinfo("deb.debian.org", "80", &hints, &res) != 0)
		return false;
	for (struct addrinfo *ai = res; ai && !ok; ai = ai->ai_next) {
		int s = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (s < 0)
			continue;
		if (connect(s, ai->ai_addr, ai->ai_addrlen) == 0) {
			ok = true;
		} else if (errno == EINPROGRESS) {
			struct pollfd pfd = {.fd = s, .events = POLLOUT};
			int e = 0;
			socklen_t l = sizeof(e);
			ok = poll(&pfd, 1, 3000) == 1 &&
			     getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &l) == 0 && e == 0;
		}
		close(s);
	}
	freeaddrinfo(res);
	return ok;
}

/*
 * mmdebstrap for real, with a spec whose values are hostile to a careless shell: they must land
 * as literal text, and nothing they spell may run.
 */
static void test_debian(void **state)
{
	(void)state;
	if (!have("mmdebstrap") || !have("mkfs.erofs") || !have("fsck.erofs"))
		skip();
	if (geteuid() != 0) {
		print_message(
		    "mmdebstrap test: needs root or subordinate ids; skipped unless root\n");
		skip();
	}
	if (!mirror_reachable()) {
		print_message("deb.debian.org unreachable: skipping the mmdebstrap test\n");
		skip();
	}
	struct place p;
	place_new(&p);
	char *src = xasprintf("%s/it's $(touch pwned-src).txt", p.base);
	FILE *f = fopen(src, "w");
	assert_non_null(f);
	fputs("payload\n", f);
	fclose(f);
	assert_int_equal(chmod(src, 0751), 0);

	static const char dst[] = "/opt/we'ird $(touch /pwned-dst) \"q\" `id`/f 'x'.txt";
	struct lg_image_file files[] = {
	    {.src = src, .dst = (char *)dst, .mode = 0},
	    {.src = src, .dst = "/etc/second", .mode = 0600},
	};
	char *env[] = {"GREETING=it's $(touch /pwned-env) `id` \"q\"", NULL};
	char *run[] = {
	    "printf '%s\\n' 'a'\\''b $(touch /pwned-run) `id`' > /run-out",
	    "printf '%s' \"$GREETING\" > /env-out",
	    "pwd > /pwd-out",
	    NULL,
	};
	char *none[] = {NULL};
	struct lg_image_spec spec = {
	    .packages = none,
	    .files = files,
	    .nfiles = 2,
	    .env = env,
	    .workdir = "/srv/w 'd' $(x)",
	    .run = run,
	};
	struct lg_debian_opts o = {.spec = &spec};
	struct lg_err *err = NULL;
	char *cwd = getcwd(NULL, 0);
	assert_int_equal(chdir(p.base), 0);

	uint64_t t0 = lg_now_ms();
	int ret = lg_rootfs_debian(&o, p.tar, &err);
	print_message("mmdebstrap: %llu ms\n", (unsigned long long)(lg_now_ms() - t0));
	if (ret < 0)
		fail_msg("%s", err->msg);
	struct lg_rootfs_stats st = {0};
	if (lg_rootfs_from_tar(p.tar, p.work, p.out, NULL, &st, &err) < 0)
		fail_msg("%s", err->msg);
	assert_true(st.packages > 50);
	assert_true(st.owners_kept);
	char *dir = extract_image(&p);
	assert_file(dir, dst + 1, "payload\n", 0751, 0, 0);
	assert_file(dir, "etc/second", "payload\n", 0600, 0, 0);
	assert_file(dir, "run-out", "a'b $(touch /pwned-run) `id`\n", 0644, 0, 0);
	assert_file(dir, "env-out", "it's $(touch /pwned-env) `id` \"q\"", 0644, 0, 0);
	assert_file(dir, "pwd-out", "/srv/w 'd' $(x)\n", 0644, 0, 0);
	assert_absent(dir, "pwned-dst");
	assert_absent(dir, "pwned-env");
	assert_absent(dir, "pwned-run");
	assert_absent(dir, "tmp/lg-build.sh");
	assert_absent(dir, "tmp/lg-file-0");
	assert_int_equal(access("/pwned-dst", F_OK), -1);
	assert_int_equal(access("pwned-src", F_OK), -1);
	/* Only the tarball, the sentinel, the extracted check and the image: no hook directory. */
	DIR *d = opendir(p.base);
	struct dirent *de;
	while ((de = readdir(d)))
		assert_null(strstr(de->d_name, ".lg-hooks"));
	closedir(d);
	assert_int_equal(chdir(cwd), 0);
	free(cwd);
	free(dir);
	free(src);
	place_free(&p);
}

int main(void)
{
	/* As the CLI: helpers must still die of a closed pipe (rootfs.c resets it for them), or a
	 * decompressor's "Broken pipe" would hide the extractor's error. */
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_host_suite), cmocka_unit_test(test_formats),
	    cmocka_unit_test(test_hostile),    cmocka_unit_test(test_hostile_harmless),
	    cmocka_unit_test(test_truncated),  cmocka_unit_test(test_refusals),
	    cmocka_unit_test(test_nonroot),    cmocka_unit_test(test_interrupted),
	    cmocka_unit_test(test_debian),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
