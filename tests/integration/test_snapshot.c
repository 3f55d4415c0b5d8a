/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Snapshots with real VMs (the qemu backend, images under
 * $LUMINAGUARD_HOME): restore from one snapshot many times, each restored
 * guest its own (RNG, clock, hostname, machine-id); a damaged or stale
 * snapshot refused with -ESTALE and rebuilt; concurrent builds; nothing
 * left behind.  The `tiny` image is the fast one; `default` (a root file
 * system image) runs where it is built, else its test skips.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/paths.h"
#include "common/util.h"
#include "host/sandbox.h"
#include "host/snapshot.h"
#include "image/image.h"
#include "jail/jail.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *test_image = "tiny";

static void opts_for(struct lg_sandbox_opts *o, const char *image)
{
	*o = (struct lg_sandbox_opts){.image = image, .cancel_fd = -1, .console_fd = -1};
}

static char *ensure(const char *image)
{
	struct lg_sandbox_opts o;
	struct lg_err *err = NULL;
	char *dir = NULL;

	opts_for(&o, image);
	if (lg_snapshot_ensure(&o, &dir, &err) < 0)
		fail_msg("ensure: %s", err->msg);
	return dir;
}

static struct lg_sandbox *restore(const char *image, const char *dir, const char *hostname)
{
	struct lg_sandbox_opts o;
	struct lg_sandbox *sb = NULL;
	struct lg_err *err = NULL;

	opts_for(&o, image);
	o.snapshot = dir;
	o.hostname = hostname;
	if (lg_sandbox_create(&o, &sb, &err) < 0)
		fail_msg("restore: %s", err->msg);
	assert_true(sb->restored);
	return sb;
}

/* Runs argv, returns its stdout (trimmed) as a new string; fails on a non-zero exit. */
static int out_cb(void *ctx, enum lg_stream s, const uint8_t *p, size_t n)
{
	if (s == LG_STREAM_STDOUT)
		lg_buf_append(ctx, p, n);
	return 0;
}

static char *sh(struct lg_sandbox *sb, const char *script)
{
	char *argv[] = {"/bin/sh", "-c", (char *)script, NULL};
	struct lg_buf out = {0};
	struct lg_exec_opts o = {.argv = argv,
				 .stdin_fd = -1,
				 .cancel_fd = -1,
				 .on_output = out_cb,
				 .ctx = &out,
				 .timeout_ms = 30000};
	struct lg_exec_result res;
	struct lg_err *err = NULL;
	char *s;

	if (lg_sandbox_exec(sb, &o, &res, &err) < 0)
		fail_msg("exec %s: %s", script, err->msg);
	assert_int_equal(res.signal, 0);
	assert_int_equal(res.exit_code, 0);
	s = xmalloc(out.len + 1);
	memcpy(s, out.data != NULL ? (char *)out.data : "", out.len);
	s[out.len] = '\0';
	while (out.len > 0 && (s[out.len - 1] == '\n' || s[out.len - 1] == ' '))
		s[--out.len] = '\0';
	lg_buf_free(&out);
	return s;
}

static int count_children(void)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	int n = 0;
	pid_t self = getpid();

	while ((de = readdir(d)) != NULL) {
		char path[300], buf[512];
		FILE *f;
		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
		f = fopen(path, "re");
		if (f == NULL)
			continue;
		if (fgets(buf, sizeof(buf), f) != NULL) {
			char *rp = strrchr(buf, ')');
			int ppid = 0;
			if (rp != NULL && sscanf(rp + 2, "%*c %d", &ppid) == 1 && ppid == self)
				n++;
		}
		fclose(f);
	}
	closedir(d);
	return n;
}

/* Entries of the snapshots directory that are neither a snapshot nor its lock. */
static int count_leftovers(void)
{
	cleanup_free char *home = lg_home_dir();
	cleanup_free char *base = xasprintf("%s/snapshots", home);
	DIR *d = opendir(base);
	struct dirent *de;
	int n = 0;

	if (d == NULL)
		return 0;
	while ((de = readdir(d)) != NULL)
		if (strncmp(de->d_name, ".tmp-", 5) == 0 || strncmp(de->d_name, ".old-", 5) == 0)
			n++;
	closedir(d);
	return n;
}

static void remove_snapshot(const char *dir)
{
	lg_rm_rf(dir);
}

/* The core promise: restored clones share nothing that must be unique. */
static void test_restored_guests_are_their_own(void **state)
{
	cleanup_free char *dir = ensure(test_image);
	struct lg_sandbox *a = restore(test_image, dir, "alpha-1");
	struct lg_sandbox *b = restore(test_image, dir, "beta-2");
	struct lg_sandbox *c = restore(test_image, dir, NULL);
	const char *rnd = "od -An -tx1 -N32 /dev/urandom | tr -d ' \\n'";
	cleanup_free char *ra = sh(a, rnd);
	cleanup_free char *rb = sh(b, rnd);
	cleanup_free char *rc = sh(c, rnd);
	cleanup_free char *ha = sh(a, "hostname");
	cleanup_free char *hb = sh(b, "hostname");
	cleanup_free char *hc = sh(c, "hostname");
	cleanup_free char *echo = sh(a, "echo restored ok");

	assert_int_equal(strlen(ra), 64);
	assert_string_not_equal(ra, rb);
	assert_string_not_equal(ra, rc);
	assert_string_not_equal(rb, rc);
	assert_string_equal(ha, "alpha-1");
	assert_string_equal(hb, "beta-2");
	assert_int_equal(strlen(hc), 11);
	assert_memory_equal(hc, "lg-", 3);
	assert_string_equal(echo, "restored ok");
	print_message("restore to ready: %llu, %llu, %llu ms\n", (unsigned long long)a->boot_ms,
		      (unsigned long long)b->boot_ms, (unsigned long long)c->boot_ms);
	assert_int_equal(count_children(), 3);
	lg_sandbox_destroy(a);
	lg_sandbox_destroy(b);
	lg_sandbox_destroy(c);
	assert_int_equal(count_children(), 0);
	assert_int_equal(count_leftovers(), 0);
}

/* A snapshot made 3 s ago: the restored guest's clock is the host's, not the snapshot's. */
static void test_clock_after_restore(void **state)
{
	cleanup_free char *dir = NULL;
	struct lg_sandbox *sb;
	struct timespec before, after;
	cleanup_free char *out = NULL;
	double guest;

	dir = ensure(test_image);
	remove_snapshot(dir);
	free(dir);
	dir = ensure(test_image);
	sleep(3);
	sb = restore(test_image, dir, NULL);
	clock_gettime(CLOCK_REALTIME, &before);
	out = sh(sb, "date +%s");
	clock_gettime(CLOCK_REALTIME, &after);
	guest = strtod(out, NULL);
	print_message("host %ld..%ld, guest %s\n", (long)before.tv_sec, (long)after.tv_sec, out);
	/* date +%s truncates: the guest's second is within [before - 2, after + 2]. */
	assert_true(guest >= (double)before.tv_sec - 2 && guest <= (double)after.tv_sec + 2);
	lg_sandbox_destroy(sb);
}

static int restore_err(const char *dir, char **msg)
{
	struct lg_sandbox_opts o;
	struct lg_sandbox *sb = NULL;
	struct lg_err *err = NULL;
	int r;

	opts_for(&o, test_image);
	o.snapshot = dir;
	r = lg_sandbox_create(&o, &sb, &err);
	if (r == 0) {
		lg_sandbox_destroy(sb);
		*msg = NULL;
		return 0;
	}
	*msg = xstrdup(err->msg);
	lg_err_free(&err);
	return r;
}

static void flip_byte(const char *path, off_t off)
{
	int fd = open(path, O_RDWR);
	unsigned char c;

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &c, 1, off), 1);
	c ^= 0x5a;
	assert_int_equal(pwrite(fd, &c, 1, off), 1);
	close(fd);
}

static void replace_in_file(const char *path, const char *from, const char *to)
{
	FILE *f = fopen(path, "re");
	char buf[16384];
	size_t n;
	char *at;

	assert_non_null(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	at = strstr(buf, from);
	assert_non_null(at);
	f = fopen(path, "we");
	fwrite(buf, 1, (size_t)(at - buf), f);
	fputs(to, f);
	fputs(at + strlen(from), f);
	fclose(f);
}

static void expect_stale(const char *dir, const char *what)
{
	cleanup_free char *msg = NULL;
	int r = restore_err(dir, &msg);

	print_message("%s: %s\n", what, msg != NULL ? msg : "(restored)");
	assert_int_equal(r, -ESTALE);
	assert_null(strchr(msg, '\n'));
	assert_non_null(strstr(msg, "stale or damaged"));
	assert_int_equal(count_children(), 0);
}

static void rebuild_and_restore(const char *dir)
{
	cleanup_free char *again = ensure(test_image);
	struct lg_sandbox *sb;
	cleanup_free char *out = NULL;

	assert_string_equal(again, dir);
	sb = restore(test_image, again, NULL);
	out = sh(sb, "echo fine");
	assert_string_equal(out, "fine");
	lg_sandbox_destroy(sb);
}

/* Damage of every kind is refused before QEMU loads anything; ensure rebuilds. */
static void test_damaged_snapshot_refused_and_rebuilt(void **state)
{
	cleanup_free char *dir = ensure(test_image);
	cleanup_free char *state_path = xasprintf("%s/state", dir);
	cleanup_free char *meta = xasprintf("%s/meta.json", dir);
	cleanup_free char *ram = xasprintf("%s/ram", dir);
	struct stat st;

	/* One flipped byte in the middle of the device state. */
	assert_int_equal(stat(state_path, &st), 0);
	flip_byte(state_path, st.st_size / 2);
	expect_stale(dir, "flipped state byte");
	rebuild_and_restore(dir);

	/* A truncated device state. */
	assert_int_equal(truncate(state_path, 100), 0);
	expect_stale(dir, "truncated state");
	rebuild_and_restore(dir);

	/* meta.json of another format version. */
	replace_in_file(meta, "\"format\": 1", "\"format\": 99");
	expect_stale(dir, "format 99");
	rebuild_and_restore(dir);

	/* The RAM file written to after the snapshot was made (a hostile VMM would). */
	flip_byte(ram, 4096);
	expect_stale(dir, "RAM written");
	rebuild_and_restore(dir);

	/* meta.json that is not JSON. */
	replace_in_file(meta, "{", "x");
	expect_stale(dir, "meta not JSON");
	rebuild_and_restore(dir);
	assert_int_equal(count_leftovers(), 0);
}

/* A snapshot of another shape is never loaded into this one. */
static void test_other_shape_refused(void **state)
{
	cleanup_free char *dir = ensure(test_image);
	struct lg_sandbox_opts o;
	struct lg_sandbox *sb = NULL;
	struct lg_err *err = NULL;
	cleanup_free char *other = NULL;

	opts_for(&o, test_image);
	o.memory_mib = 320;
	assert_int_equal(lg_snapshot_dir(&o, &other, &err), 0);
	assert_string_not_equal(other, dir);
	o.snapshot = dir;
	assert_int_equal(lg_sandbox_create(&o, &sb, &err), -ESTALE);
	assert_non_null(strstr(err->msg, "another image, size"));
	lg_err_free(&err);
	assert_null(sb);
	/* A hostname that is not one RFC 1123 label: refused before anything starts. */
	opts_for(&o, test_image);
	o.snapshot = dir;
	o.hostname = "not_a_hostname";
	assert_int_equal(lg_sandbox_create(&o, &sb, &err), -EINVAL);
	assert_null(strchr(err->msg, '\n'));
	lg_err_free(&err);
	assert_int_equal(count_children(), 0);
}

struct ensurer {
	char *dir;
	int r;
};

static void *ensure_thread(void *arg)
{
	struct ensurer *e = arg;
	struct lg_sandbox_opts o;
	struct lg_err *err = NULL;

	opts_for(&o, test_image);
	e->r = lg_snapshot_ensure(&o, &e->dir, &err);
	lg_err_free(&err);
	return NULL;
}

/* Two threads ensure a missing snapshot at once: one builds, both get it whole. */
static void test_concurrent_ensure(void **state)
{
	cleanup_free char *dir = ensure(test_image);
	cleanup_free char *meta = xasprintf("%s/meta.json", dir);
	struct ensurer e[2] = {{0}};
	pthread_t t[2];
	struct stat st1, st2;

	remove_snapshot(dir);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, ensure_thread, &e[i]), 0);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(e[0].r, 0);
	assert_int_equal(e[1].r, 0);
	assert_string_equal(e[0].dir, dir);
	assert_string_equal(e[1].dir, dir);
	/* Built once: the second found the first's, it did not replace it. */
	assert_int_equal(stat(meta, &st1), 0);
	free(ensure(test_image));
	assert_int_equal(stat(meta, &st2), 0);
	assert_int_equal(st1.st_ino, st2.st_ino);
	free(e[0].dir);
	free(e[1].dir);
	assert_int_equal(count_leftovers(), 0);
	assert_int_equal(count_children(), 0);
}

/* A rebuild removes snapshots of an earlier build of the image, and only those. */
static void test_prune_earlier_build(void **state)
{
	cleanup_free char *dir = ensure(test_image);
	cleanup_free char *home = lg_home_dir();
	cleanup_free char *old = xasprintf("%s/snapshots/0123456789abcdef0123456789abcdef", home);
	cleanup_free char *other = xasprintf("%s/snapshots/fedcba9876543210fedcba9876543210", home);
	const char *dirs[] = {old, other};
	const char *images[] = {test_image, "some-other-image"};
	struct stat st;

	for (int i = 0; i < 2; i++) {
		cleanup_free char *meta = xasprintf("%s/meta.json", dirs[i]);
		cleanup_free char *lock = xasprintf("%s.lock", dirs[i]);
		FILE *f;

		assert_int_equal(mkdir(dirs[i], 0700), 0);
		f = fopen(meta, "we");
		fprintf(f, "{\"format\": 1, \"image\": \"%s\", \"manifest\": \"%064d\"}\n",
			images[i], 0);
		fclose(f);
		close(open(lock, O_WRONLY | O_CREAT, 0600));
	}
	remove_snapshot(dir);
	free(ensure(test_image));
	assert_int_equal(stat(old, &st), -1);
	assert_int_equal(stat(other, &st), 0);
	lg_rm_rf(other);
	{
		cleanup_free char *lock = xasprintf("%s.lock", other);
		unlink(lock);
	}
}

/*
 * An image whose agent predates protocol 4 ($LG_SNAPSHOT_OLD_HOME: a data
 * directory holding such a `tiny`, e.g. a copy of one built before): no
 * snapshot of it is made, and adopting a booted one is refused, each with
 * one line naming the rebuild command.
 */
static void test_old_agent_refused(void **state)
{
	const char *old_home = getenv("LG_SNAPSHOT_OLD_HOME");
	cleanup_free char *saved = NULL;
	struct lg_sandbox_opts o;
	struct lg_sandbox *sb = NULL;
	struct lg_err *err = NULL;
	char *dir = NULL;

	if (old_home == NULL || *old_home == '\0')
		skip();
	saved = xstrdup(getenv("LUMINAGUARD_HOME") != NULL ? getenv("LUMINAGUARD_HOME") : "");
	setenv("LUMINAGUARD_HOME", old_home, 1);
	opts_for(&o, "tiny");
	assert_int_equal(lg_snapshot_ensure(&o, &dir, &err), -EOPNOTSUPP);
	print_message("ensure: %s\n", err->msg);
	assert_non_null(strstr(err->msg, "luminaguard image build --name tiny"));
	assert_null(strchr(err->msg, '\n'));
	lg_err_free(&err);
	assert_int_equal(count_leftovers(), 0);
	assert_int_equal(count_children(), 0);

	if (lg_sandbox_create(&o, &sb, &err) < 0)
		fail_msg("boot: %s", err->msg);
	assert_int_equal(lg_sandbox_adopt(sb, NULL, &err), -EOPNOTSUPP);
	print_message("adopt: %s\n", err->msg);
	assert_non_null(strstr(err->msg, "luminaguard image build --name tiny"));
	lg_err_free(&err);
	/* Nothing was sent: the old agent still serves. */
	{
		cleanup_free char *out = sh(sb, "echo still");
		assert_string_equal(out, "still");
	}
	lg_sandbox_destroy(sb);
	if (*saved != '\0')
		setenv("LUMINAGUARD_HOME", saved, 1);
	else
		unsetenv("LUMINAGUARD_HOME");
}

/* A root file system image: /etc/machine-id is written and differs per restore. */
static void test_rootfs_machine_id(void **state)
{
	struct lg_image *img = NULL;
	struct lg_err *err = NULL;
	cleanup_free char *dir = NULL;
	struct lg_sandbox *a, *b;
	cleanup_free char *ma = NULL, *mb = NULL, *py = NULL;

	if (lg_image_open("default", &img, &err) < 0 || img->rootfs == NULL) {
		lg_err_free(&err);
		lg_image_free(img);
		skip();
	}
	lg_image_free(img);
	dir = ensure("default");
	a = restore("default", dir, "root-a");
	b = restore("default", dir, "root-b");
	ma = sh(a, "cat /etc/machine-id");
	mb = sh(b, "cat /etc/machine-id");
	py = sh(a, "python3 -c 'import uuid; print(uuid.uuid4())' >/dev/null && echo py-ok");
	assert_int_equal(strlen(ma), 32);
	assert_string_not_equal(ma, mb);
	assert_string_equal(py, "py-ok");
	lg_sandbox_destroy(a);
	lg_sandbox_destroy(b);
	assert_int_equal(count_children(), 0);
}

/*
 * The jail's one writable bind (jail_spec.rw_files, for a snapshot's RAM
 * file): a jailed program can write that file and still not the read-only
 * ones next to it.
 */
static void test_jail_rw_files(void **state)
{
	char tmpl[] = "/tmp/lg-snap-jail-XXXXXX";
	char *dir = mkdtemp(tmpl);
	cleanup_free char *ro = NULL;
	cleanup_free char *rw = NULL;
	cleanup_free char *script = NULL;
	cleanup_free char *sh_path = realpath("/bin/sh", NULL);
	struct jail *j = NULL;
	struct lg_err *err = NULL;
	char out[512] = "";
	int pipefd[2], st, fd;
	ssize_t n;

	assert_non_null(dir);
	assert_non_null(sh_path);
	assert_int_equal(chmod(dir, 0755), 0);
	ro = xasprintf("%s/ro", dir);
	rw = xasprintf("%s/rw", dir);
	/* World-writable too: only the read-only bind may stop the write. */
	fd = open(ro, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0 && fchmod(fd, 0666) == 0 && write(fd, "ro\n", 3) == 3);
	close(fd);
	fd = open(rw, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0 && fchmod(fd, 0666) == 0 && write(fd, "rw\n", 3) == 3);
	close(fd);
	script = xasprintf("echo x >> %s 2>/dev/null && echo ro-written >&2; "
			   "echo y >> %s && echo rw-written >&2",
			   ro, rw);
	{
		char *argv[] = {sh_path, (char *)"-c", script, NULL};
		const char *files[] = {ro, NULL};
		const char *rw_files[] = {rw, NULL};
		struct jail_spec spec = {.name = "snaptest",
					 .vmm_kind = "none",
					 .binary = sh_path,
					 .argv = argv,
					 .files = files,
					 .rw_files = rw_files,
					 .stderr_fd = -1};

		assert_int_equal(pipe2(pipefd, O_CLOEXEC), 0);
		spec.stderr_fd = pipefd[1];
		if (jail_spawn(&spec, &j, &err) < 0)
			fail_msg("jail: %s", err->msg);
		close(pipefd[1]);
	}
	assert_int_equal(waitpid(jail_pid(j), &st, 0), jail_pid(j));
	jail_release(j);
	n = read(pipefd[0], out, sizeof(out) - 1);
	close(pipefd[0]);
	out[n > 0 ? n : 0] = '\0';
	print_message("jailed: %s", out);
	assert_null(strstr(out, "ro-written"));
	assert_non_null(strstr(out, "Read-only file system"));
	assert_non_null(strstr(out, "rw-written"));
	{
		char buf[16] = "";
		fd = open(rw, O_RDONLY);
		assert_int_equal(read(fd, buf, sizeof(buf)), 5);
		close(fd);
		assert_memory_equal(buf, "rw\ny\n", 5);
	}
	unlink(ro);
	unlink(rw);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_jail_rw_files),
	    cmocka_unit_test(test_restored_guests_are_their_own),
	    cmocka_unit_test(test_clock_after_restore),
	    cmocka_unit_test(test_damaged_snapshot_refused_and_rebuilt),
	    cmocka_unit_test(test_other_shape_refused),
	    cmocka_unit_test(test_concurrent_ensure),
	    cmocka_unit_test(test_prune_earlier_build),
	    cmocka_unit_test(test_old_agent_refused),
	    cmocka_unit_test(test_rootfs_machine_id),
	};
	const char *img = getenv("LG_SNAPSHOT_TEST_IMAGE");

	if (img != NULL && *img != '\0')
		test_image = img;
	return cmocka_run_group_tests_name("snapshot", tests, NULL, NULL);
}
