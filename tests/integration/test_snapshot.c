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

#include "common/env.h"
#include "common/paths.h"
#include "common/util.h"
#include "host/sandbox.h"
#include "host/snapshot.h"
#include "image/image.h"
#include "jail/jail.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/file.h>
#include <sys/socket.h>
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
	assert_true(lg_sandbox_restored(sb));
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
	print_message(
	    "restore to ready: %llu, %llu, %llu ms\n", (unsigned long long)lg_sandbox_boot_ms(a),
	    (unsigned long long)lg_sandbox_boot_ms(b), (unsigned long long)lg_sandbox_boot_ms(c));
	assert_int_equal(count_children(), 3);
	lg_sandbox_destroy(a);
	lg_sandbox_destroy(b);
	lg_sandbox_destroy(c);
	assert_int_equal(count_children(), 0);
	assert_int_equal(count_leftovers(), 0);
}

/* The fd of the VMM's RAM memfd, opened O_RDWR through /proc/PID/fd (-1: none). */
static int open_vmm_ram(pid_t pid, int *fdno)
{
	cleanup_free char *fds = xasprintf("/proc/%d/fd", (int)pid);
	DIR *d = opendir(fds);
	struct dirent *de;
	int fd = -1;

	assert_non_null(d);
	while (fd < 0 && (de = readdir(d)) != NULL) {
		cleanup_free char *link = xasprintf("%s/%s", fds, de->d_name);
		char target[256];
		ssize_t n = readlink(link, target, sizeof(target) - 1);

		if (n <= 0)
			continue;
		target[n] = '\0';
		if (strncmp(target, "/memfd:lg-snapshot-ram", 22) == 0) {
			fd = open(link, O_RDWR | O_CLOEXEC);
			*fdno = atoi(de->d_name);
		}
	}
	closedir(d);
	return fd;
}

/*
 * What a VMM that a guest took over could do to the RAM every restore of
 * the snapshot maps: nothing.  It is a memfd sealed against writes, which
 * the VMM reaches only through its own /dev/fd; not even root, opening it
 * O_RDWR as QEMU does, can write it, map it shared and writable, or resize
 * it, while a private writable mapping (the guest's RAM) works.  The RAM
 * file itself is 0600, root's, and not in the jail.  Two VMs share one copy.
 */
static void test_restored_ram_sealed(void **state)
{
	cleanup_free char *dir = ensure(test_image);
	cleanup_free char *ram = xasprintf("%s/ram", dir);
	struct lg_sandbox *a = restore(test_image, dir, "sealed-a");
	struct lg_sandbox *b = restore(test_image, dir, "sealed-b");
	pid_t pa = lg_sandbox_pid(a), pb = lg_sandbox_pid(b);
	cleanup_free char *in_jail = xasprintf("/proc/%d/root%s", (int)pa, ram);
	cleanup_free char *maps_path = xasprintf("/proc/%d/maps", (int)pa);
	cleanup_free char *jail_fd = NULL;
	cleanup_free char *echo = NULL;
	struct stat st, rst, sta, stb, stj;
	int fa, fb, na = -1, nb = -1, seals;
	char *priv, buf[8192];
	void *m;
	FILE *f;
	bool mapped = false, file_mapped = false;

	/* The file: private to this process, and not in the VMM's jail. */
	assert_int_equal(stat(ram, &rst), 0);
	assert_int_equal(rst.st_mode & 077, 0);
	assert_int_equal(rst.st_uid, geteuid());
	assert_int_equal(stat(in_jail, &st), -1);
	assert_int_equal(errno, ENOENT);

	fa = open_vmm_ram(pa, &na);
	fb = open_vmm_ram(pb, &nb);
	assert_true(fa >= 0 && fb >= 0);
	/* The path QEMU opened is in its jail: /dev/fd/N, its own fd N. */
	jail_fd = xasprintf("/proc/%d/root/dev/fd/%d", (int)pa, na);
	assert_int_equal(stat(jail_fd, &stj), 0);
	assert_int_equal(fstat(fa, &sta), 0);
	assert_int_equal(fstat(fb, &stb), 0);
	assert_int_equal(stj.st_ino, sta.st_ino);
	/* One copy per process, whatever the number of VMs. */
	assert_int_equal(sta.st_ino, stb.st_ino);
	assert_int_equal(sta.st_size, rst.st_size);
	seals = fcntl(fa, F_GET_SEALS);
	assert_int_equal(seals & (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE),
			 F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);

	/* Opened O_RDWR, as QEMU does, by root: still no way to change it. */
	errno = 0;
	assert_int_equal(pwrite(fa, "x", 1, 4096), -1);
	assert_int_equal(errno, EPERM);
	errno = 0;
	m = mmap(NULL, 1u << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fa, 0);
	assert_true(m == MAP_FAILED);
	assert_int_equal(errno, EPERM);
	errno = 0;
	assert_int_equal(ftruncate(fa, 0), -1);
	assert_int_equal(errno, EPERM);
	errno = 0;
	assert_int_equal(fallocate(fa, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096), -1);
	assert_int_equal(errno, EPERM);
	errno = 0;
	assert_int_equal(fcntl(fa, F_ADD_SEALS, F_SEAL_FUTURE_WRITE), -1);
	assert_int_equal(errno, EPERM);
	/* What share=off does: a private copy-on-write mapping, writable. */
	priv = mmap(NULL, 1u << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE, fa, 0);
	assert_true(priv != MAP_FAILED);
	priv[4096] ^= 0x5a;
	assert_int_equal(pread(fa, buf, 1, 4096), 1);
	assert_int_not_equal(buf[0], priv[4096]);
	munmap(priv, 1u << 20);

	/* QEMU maps the memfd, never the file. */
	f = fopen(maps_path, "re");
	assert_non_null(f);
	while (fgets(buf, sizeof(buf), f) != NULL) {
		if (strstr(buf, "/memfd:lg-snapshot-ram") != NULL)
			mapped = true;
		if (strstr(buf, ram) != NULL)
			file_mapped = true;
	}
	fclose(f);
	assert_true(mapped);
	assert_false(file_mapped);

	echo = sh(a, "echo still running");
	assert_string_equal(echo, "still running");
	lg_sandbox_destroy(a);
	lg_sandbox_destroy(b);

	/* Remade: the next restore maps a new copy, not the one cached before (fa holds it). */
	remove_snapshot(dir);
	free(ensure(test_image));
	a = restore(test_image, dir, NULL);
	close(fb);
	fb = open_vmm_ram(lg_sandbox_pid(a), &nb);
	assert_true(fb >= 0);
	assert_int_equal(fstat(fb, &stb), 0);
	assert_int_not_equal(stb.st_ino, sta.st_ino);
	close(fa);
	close(fb);
	lg_sandbox_destroy(a);
	assert_int_equal(count_children(), 0);
}

/* --no-jail (debugging): QEMU opens the memfd through the host's own /dev/fd. */
static void test_restore_unjailed(void **state)
{
	cleanup_free char *dir = ensure(test_image);
	static const struct jail_opts nojail = {.disabled = true};
	struct lg_sandbox_opts o;
	struct lg_sandbox *sb = NULL;
	struct lg_err *err = NULL;
	cleanup_free char *out = NULL;

	opts_for(&o, test_image);
	o.snapshot = dir;
	o.jail = &nojail;
	if (lg_sandbox_create(&o, &sb, &err) < 0)
		fail_msg("restore unjailed: %s", err->msg);
	out = sh(sb, "echo unjailed");
	assert_string_equal(out, "unjailed");
	lg_sandbox_destroy(sb);
}

/* The backend restores only from a sealed memfd: a file or an unsealed fd is refused. */
static void test_restore_needs_sealed_ram(void **state)
{
	cleanup_free char *dir = ensure(test_image);
	cleanup_free char *ram = xasprintf("%s/ram", dir);
	struct lg_sandbox_opts o;
	struct lg_sandbox_plan p;
	struct lg_err *err = NULL;
	struct vm_config cfg;
	struct vm *vm = NULL;
	int fd = memfd_create("unsealed", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	assert_true(fd >= 0);
	opts_for(&o, test_image);
	assert_int_equal(lg_sandbox_plan(&o, &p, &err), 0);
	cfg = p.cfg;
	cfg.incoming = true;
	cfg.ram_fd = fd;
	assert_int_equal(p.backend->spawn(&cfg, &vm, &err), -EINVAL);
	print_message("unsealed: %s\n", err->msg);
	assert_non_null(strstr(err->msg, "sealed"));
	lg_err_free(&err);
	/* Sealed but still writable (no F_SEAL_WRITE): refused too. */
	assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL), 0);
	assert_int_equal(p.backend->spawn(&cfg, &vm, &err), -EINVAL);
	lg_err_free(&err);
	close(fd);
	/* The file itself, as restores had it before format 3. */
	cfg.ram_fd = -1;
	cfg.ram_file = ram;
	assert_int_equal(p.backend->spawn(&cfg, &vm, &err), -EINVAL);
	lg_err_free(&err);
	assert_null(vm);
	lg_sandbox_plan_free(&p);
	assert_int_equal(count_children(), 0);
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
	cleanup_free char *format = xasprintf("\"format\": %d", LG_SNAPSHOT_FORMAT);
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

	/*
	 * meta.json of another format version: 1 is a snapshot made before
	 * its VM had the network port, whose device layout a restore now
	 * differs from.
	 */
	replace_in_file(meta, format, "\"format\": 1");
	expect_stale(dir, "format 1");
	rebuild_and_restore(dir);
	replace_in_file(meta, format, "\"format\": 99");
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
	/* This very build of the image, in format 1 (no network port) and in a later one. */
	cleanup_free char *fmt1 = xasprintf("%s/snapshots/00000000000000000000000000000001", home);
	cleanup_free char *later = xasprintf("%s/snapshots/00000000000000000000000000000099", home);
	cleanup_free char *meta_path = xasprintf("%s/meta.json", dir);
	json_t *meta = json_load_file(meta_path, 0, NULL);
	const char *m = json_string_value(json_object_get(meta, "manifest"));
	cleanup_free char *manifest = xstrdup(m != NULL ? m : "?");
	cleanup_free char *zeros = xasprintf("%064d", 0);
	const char *dirs[] = {old, other, fmt1, later};
	const char *images[] = {test_image, "some-other-image", test_image, test_image};
	const char *manifests[] = {zeros, zeros, manifest, manifest};
	const int formats[] = {LG_SNAPSHOT_FORMAT, 1, 1, LG_SNAPSHOT_FORMAT + 1};
	const bool pruned[] = {true, false, true, false};
	struct stat st;

	json_decref(meta);
	assert_int_equal(strlen(manifest), 64);
	for (int i = 0; i < 4; i++) {
		cleanup_free char *meta_i = xasprintf("%s/meta.json", dirs[i]);
		cleanup_free char *lock = xasprintf("%s.lock", dirs[i]);
		FILE *f;

		assert_int_equal(mkdir(dirs[i], 0700), 0);
		f = fopen(meta_i, "we");
		fprintf(f, "{\"format\": %d, \"image\": \"%s\", \"manifest\": \"%s\"}\n",
			formats[i], images[i], manifests[i]);
		fclose(f);
		close(open(lock, O_WRONLY | O_CREAT, 0600));
	}
	remove_snapshot(dir);
	free(ensure(test_image));
	for (int i = 0; i < 4; i++) {
		cleanup_free char *lock = xasprintf("%s.lock", dirs[i]);

		assert_int_equal(stat(dirs[i], &st), pruned[i] ? -1 : 0);
		lg_rm_rf(dirs[i]);
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
	lg_env_reload(); /* the environment is read once: read it again */
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
	lg_env_reload();
}

/*
 * lg_snapshot_sweep (serve's start): the leftovers of a build that died
 * go; those of a build in progress (its key's lock held) and anything
 * that is not a leftover stay.
 */
static void test_sweep(void **state)
{
	cleanup_free char *home = lg_home_dir();
	cleanup_free char *base = xasprintf("%s/snapshots", home);
	const char *dead = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		   *busy = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
	cleanup_free char *dead_tmp = xasprintf("%s/.tmp-%s-x1", base, dead);
	cleanup_free char *dead_old = xasprintf("%s/.old-%s-x2", base, dead);
	cleanup_free char *busy_tmp = xasprintf("%s/.tmp-%s-x3", base, busy);
	cleanup_free char *odd = xasprintf("%s/.tmp-not-a-key", base);
	cleanup_free char *busy_lock = xasprintf("%s/%s.lock", base, busy);
	cleanup_free char *dead_lock = xasprintf("%s/%s.lock", base, dead);
	const char *dirs[] = {dead_tmp, dead_old, busy_tmp, odd};
	int lock;

	(void)state;
	mkdir(base, 0700);
	for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
		cleanup_free char *f = xasprintf("%s/ram", dirs[i]);
		assert_int_equal(mkdir(dirs[i], 0700), 0);
		int fd = open(f, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
		assert_true(fd >= 0);
		assert_int_equal(write(fd, "x", 1), 1);
		close(fd);
	}
	lock = open(busy_lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	assert_true(lock >= 0);
	assert_int_equal(flock(lock, LOCK_EX), 0);
	/* flock is per open file: the sweep's own open of the lock cannot take it. */
	assert_int_equal(lg_snapshot_sweep(), 2);
	assert_int_equal(access(dead_tmp, F_OK), -1);
	assert_int_equal(access(dead_old, F_OK), -1);
	assert_int_equal(access(busy_tmp, F_OK), 0);
	assert_int_equal(access(odd, F_OK), 0);
	close(lock);
	assert_int_equal(lg_snapshot_sweep(), 1);
	assert_int_equal(access(busy_tmp, F_OK), -1);
	lg_rm_rf(odd);
	unlink(busy_lock);
	unlink(dead_lock);
	assert_int_equal(count_leftovers(), 0);
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

/*
 * jail_spec.dev_fd: the jailed program reaches a passed sealed memfd as
 * /dev/fd/3 (the jail has no /proc), can read it, and cannot write it.
 */
static void test_jail_dev_fd(void **state)
{
	cleanup_free char *sh_path = realpath("/bin/sh", NULL);
	const char *script = "read line < /dev/fd/3 && echo \"read:$line\" >&2; "
			     "(printf x >> /dev/fd/3) 2>/dev/null && echo memfd-written >&2; "
			     "[ -e /proc/self ] || echo no-proc >&2; echo done >&2";
	struct jail *j = NULL;
	struct lg_err *err = NULL;
	char out[512] = "", buf[16] = "";
	int pipefd[2], st, mfd;
	ssize_t n;

	assert_non_null(sh_path);
	mfd = memfd_create("lg-test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	assert_true(mfd >= 0);
	assert_int_equal(write(mfd, "sealed\n", 7), 7);
	assert_int_equal(
	    fcntl(mfd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE), 0);
	{
		char *argv[] = {sh_path, (char *)"-c", (char *)script, NULL};
		int pass[] = {mfd};
		struct jail_spec spec = {.name = "snapdevfd",
					 .vmm_kind = "none",
					 .binary = sh_path,
					 .argv = argv,
					 .dev_fd = true,
					 .pass_fds = pass,
					 .n_pass_fds = 1};

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
	assert_non_null(strstr(out, "read:sealed"));
	assert_null(strstr(out, "memfd-written"));
	assert_non_null(strstr(out, "no-proc"));
	assert_non_null(strstr(out, "done"));
	assert_int_equal(pread(mfd, buf, sizeof(buf), 0), 7);
	assert_memory_equal(buf, "sealed\n", 7);
	close(mfd);
}

/* ---- the network at claim time (net_port, lg_sandbox_set_net) ---- */

/* A host web server on 127.0.0.1: every request gets body, then the connection closes. */
struct web {
	int lfd;
	uint16_t port;
	pthread_t th;
	const char *body;
};

static void *web_main(void *arg)
{
	struct web *w = arg;
	int fd;

	while ((fd = accept4(w->lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
		char buf[4096];
		size_t got = 0;
		ssize_t n;

		while (got < sizeof(buf) - 1 &&
		       (n = read(fd, buf + got, sizeof(buf) - 1 - got)) > 0) {
			got += (size_t)n;
			buf[got] = '\0';
			if (strstr(buf, "\r\n\r\n") != NULL)
				break;
		}
		dprintf(fd, "HTTP/1.0 200 OK\r\nContent-Length: %zu\r\n\r\n%s", strlen(w->body),
			w->body);
		close(fd);
	}
	return NULL;
}

static void web_start(struct web *w, const char *body)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);

	w->body = body;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	w->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(w->lfd >= 0);
	assert_int_equal(bind(w->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(w->lfd, 16), 0);
	assert_int_equal(getsockname(w->lfd, (struct sockaddr *)&sa, &len), 0);
	w->port = ntohs(sa.sin_port);
	assert_int_equal(pthread_create(&w->th, NULL, web_main, w), 0);
}

static void web_stop(struct web *w)
{
	shutdown(w->lfd, SHUT_RDWR); /* accept fails: the thread ends */
	pthread_join(w->th, NULL);
	close(w->lfd);
}

/* Counts the proxy's connection log: verdicts by kind. */
struct net_seen {
	pthread_mutex_t lock;
	int allowed, denied;
};

static void net_log(void *ctx, const struct lg_egress_event *ev)
{
	struct net_seen *n = ctx;

	pthread_mutex_lock(&n->lock);
	if (ev->verdict == LG_EGRESS_ALLOWED)
		n->allowed++;
	else
		n->denied++;
	pthread_mutex_unlock(&n->lock);
}

/*
 * In the guest: is the forwarder listening on 127.0.0.1:3128 (0C38) now,
 * the proxy variables, and a raw proxy request for http://127.0.0.1:PORT/
 * written to the forwarder (the guest has no NIC: this is its only way).
 */
static char *net_probe(struct lg_sandbox *sb, uint16_t port)
{
	cleanup_free char *script = xasprintf(
	    "grep -qi ':0C38 00000000:0000 0A' /proc/net/tcp && echo LISTENING; "
	    "env | grep -i _proxy= | sort; "
	    "(printf 'GET http://127.0.0.1:%u/ HTTP/1.0\r\nHost: 127.0.0.1:%u\r\n\r\n'; sleep 2) "
	    "| nc -w 5 127.0.0.1 3128; echo nc=$?",
	    port, port);

	return sh(sb, script);
}

static struct lg_sandbox *boot_net_port(void)
{
	struct lg_sandbox_opts o;
	struct lg_sandbox *sb = NULL;
	struct lg_err *err = NULL;

	opts_for(&o, test_image);
	o.net_port = true;
	if (lg_sandbox_create(&o, &sb, &err) < 0)
		fail_msg("boot with net_port: %s", err->msg);
	return sb;
}

/*
 * A VM booted with the port and claimed without network: before the
 * claim its streams are refused (a pooled VM reaches nothing); after
 * set_net(NULL) the forwarder is gone, 127.0.0.1:3128 refuses, and no
 * command gets proxy variables.  A second set_net is -EINVAL.
 */
static void test_net_port_claimed_without_network(void **state)
{
	struct web w;
	struct lg_sandbox *sb;
	struct lg_sandbox_net net = {.allow = NULL};
	struct lg_err *err = NULL;
	cleanup_free char *before = NULL, *after = NULL, *script = NULL;

	web_start(&w, "secret-of-the-host\n");
	sb = boot_net_port();
	assert_false(lg_sandbox_has_net(sb));
	before = net_probe(sb, w.port);
	print_message("pooled, unclaimed: %s\n", before);
	assert_non_null(strstr(before, "LISTENING"));
	assert_null(strstr(before, "_proxy="));
	assert_null(strstr(before, "secret-of-the-host"));

	assert_int_equal(lg_sandbox_set_net(sb, NULL, &err), 0);
	assert_false(lg_sandbox_has_net(sb));
	/* The forwarder reads the port's end and exits within moments. */
	script = xasprintf("for i in $(seq 1 50); do grep -qi ':0C38 00000000:0000 0A' "
			   "/proc/net/tcp || break; sleep 0.1; done; "
			   "grep -qi ':0C38 00000000:0000 0A' /proc/net/tcp && echo LISTENING; "
			   "env | grep -i _proxy=; "
			   "echo x | nc -w 3 127.0.0.1 3128 2>&1; echo nc=$?");
	after = sh(sb, script);
	print_message("claimed without network: %s\n", after);
	assert_null(strstr(after, "LISTENING"));
	assert_null(strstr(after, "_proxy="));
	assert_non_null(strstr(after, "refused"));
	assert_null(strstr(after, "nc=0"));

	assert_int_equal(lg_sandbox_set_net(sb, &net, &err), -EINVAL);
	print_message("second set_net: %s\n", err->msg);
	lg_err_free(&err);
	assert_int_equal(lg_sandbox_set_net(sb, NULL, &err), -EINVAL);
	lg_err_free(&err);
	lg_sandbox_destroy(sb);
	web_stop(&w);
	assert_int_equal(count_children(), 0);
}

/* Egress attached to sb: the allowed destination answers, another is refused. */
static void check_egress(struct lg_sandbox *sb, struct web *ok, struct web *other,
			 struct net_seen *seen)
{
	cleanup_free char *good = net_probe(sb, ok->port);
	cleanup_free char *bad = net_probe(sb, other->port);

	print_message("allowed: %s\nrefused: %s\n", good, bad);
	assert_non_null(strstr(good, "http_proxy=http://127.0.0.1:3128"));
	assert_non_null(strstr(good, "NO_PROXY=localhost,127.0.0.1"));
	assert_non_null(strstr(good, "HTTP/1.0 200"));
	assert_non_null(strstr(good, ok->body));
	assert_non_null(strstr(bad, "403"));
	assert_null(strstr(bad, other->body));
	pthread_mutex_lock(&seen->lock);
	assert_int_equal(seen->allowed, 1);
	assert_int_equal(seen->denied, 1);
	pthread_mutex_unlock(&seen->lock);
}

static void test_net_port_claimed_with_network(void **state)
{
	struct web ok, other;
	struct net_seen seen = {.lock = PTHREAD_MUTEX_INITIALIZER};
	struct lg_sandbox *sb, *plain;
	struct lg_err *err = NULL;
	struct lg_sandbox_opts o;
	cleanup_free char *allow = NULL;
	struct lg_sandbox_net net = {.log = net_log, .ctx = &seen};

	web_start(&ok, "allowed-page\n");
	web_start(&other, "not-on-the-list\n");
	/* A host-written address entry: the only way to the host's own loopback. */
	allow = xasprintf("127.0.0.1:%u", ok.port);
	net.allow = allow;
	sb = boot_net_port();

	net.allow = "bad host!";
	assert_int_equal(lg_sandbox_set_net(sb, &net, &err), -EINVAL);
	print_message("bad allowlist: %s\n", err->msg);
	lg_err_free(&err);
	net.allow = allow;
	/* A refused allowlist left the port pending: the next call still works. */
	assert_int_equal(lg_sandbox_set_net(sb, &net, &err), 0);
	assert_true(lg_sandbox_has_net(sb));
	check_egress(sb, &ok, &other, &seen);
	assert_int_equal(lg_sandbox_set_net(sb, &net, &err), -EINVAL);
	lg_err_free(&err);
	lg_sandbox_destroy(sb);

	/* A VM without the port cannot be given network later. */
	opts_for(&o, test_image);
	if (lg_sandbox_create(&o, &plain, &err) < 0)
		fail_msg("boot: %s", err->msg);
	assert_int_equal(lg_sandbox_set_net(plain, &net, &err), -EINVAL);
	print_message("no port: %s\n", err->msg);
	lg_err_free(&err);
	lg_sandbox_destroy(plain);
	web_stop(&ok);
	web_stop(&other);
	assert_int_equal(count_children(), 0);
}

/*
 * A snapshot's VM has the port: a restore with net_port is claimed with
 * set_net, one with net has egress from the start, one with neither has
 * its port closed (no listener in the guest).
 */
static void test_net_after_restore(void **state)
{
	cleanup_free char *dir = ensure(test_image);
	struct web ok, other;
	struct net_seen seen = {.lock = PTHREAD_MUTEX_INITIALIZER};
	struct net_seen seen2 = {.lock = PTHREAD_MUTEX_INITIALIZER};
	struct lg_sandbox_opts o;
	struct lg_sandbox *sb;
	struct lg_err *err = NULL;
	cleanup_free char *allow = NULL, *none = NULL;
	struct lg_sandbox_net net = {.log = net_log, .ctx = &seen};
	struct lg_sandbox_net net2 = {.log = net_log, .ctx = &seen2};

	web_start(&ok, "allowed-after-restore\n");
	web_start(&other, "refused-after-restore\n");
	allow = xasprintf("127.0.0.1:%u", ok.port);
	net.allow = net2.allow = allow;

	opts_for(&o, test_image);
	o.snapshot = dir;
	o.net_port = true;
	if (lg_sandbox_create(&o, &sb, &err) < 0)
		fail_msg("restore with net_port: %s", err->msg);
	assert_true(lg_sandbox_restored(sb));
	assert_false(lg_sandbox_has_net(sb));
	assert_int_equal(lg_sandbox_set_net(sb, &net, &err), 0);
	check_egress(sb, &ok, &other, &seen);
	lg_sandbox_destroy(sb);

	o.net_port = false;
	o.net = &net2;
	if (lg_sandbox_create(&o, &sb, &err) < 0)
		fail_msg("restore with net: %s", err->msg);
	assert_true(lg_sandbox_has_net(sb));
	check_egress(sb, &ok, &other, &seen2);
	assert_int_equal(lg_sandbox_set_net(sb, NULL, &err), -EINVAL);
	lg_err_free(&err);
	lg_sandbox_destroy(sb);

	o.net = NULL;
	if (lg_sandbox_create(&o, &sb, &err) < 0)
		fail_msg("restore without network: %s", err->msg);
	assert_false(lg_sandbox_has_net(sb));
	none = sh(sb, "for i in $(seq 1 50); do grep -qi ':0C38 00000000:0000 0A' /proc/net/tcp "
		      "|| break; sleep 0.1; done; grep -qi ':0C38 00000000:0000 0A' "
		      "/proc/net/tcp && echo LISTENING; env | grep -i _proxy=; echo done");
	assert_string_equal(none, "done");
	assert_int_equal(lg_sandbox_set_net(sb, &net, &err), -EINVAL);
	lg_err_free(&err);
	lg_sandbox_destroy(sb);
	web_stop(&ok);
	web_stop(&other);
	assert_int_equal(count_children(), 0);
	assert_int_equal(count_leftovers(), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_jail_rw_files),
	    cmocka_unit_test(test_jail_dev_fd),
	    cmocka_unit_test(test_restored_guests_are_their_own),
	    cmocka_unit_test(test_restored_ram_sealed),
	    cmocka_unit_test(test_restore_needs_sealed_ram),
	    cmocka_unit_test(test_restore_unjailed),
	    cmocka_unit_test(test_clock_after_restore),
	    cmocka_unit_test(test_damaged_snapshot_refused_and_rebuilt),
	    cmocka_unit_test(test_other_shape_refused),
	    cmocka_unit_test(test_concurrent_ensure),
	    cmocka_unit_test(test_prune_earlier_build),
	    cmocka_unit_test(test_old_agent_refused),
	    cmocka_unit_test(test_sweep),
	    cmocka_unit_test(test_rootfs_machine_id),
	    cmocka_unit_test(test_net_port_claimed_without_network),
	    cmocka_unit_test(test_net_port_claimed_with_network),
	    cmocka_unit_test(test_net_after_restore),
	};
	const char *img = getenv("LG_SNAPSHOT_TEST_IMAGE");

	if (img != NULL && *img != '\0')
		test_image = img;
	return cmocka_run_group_tests_name("snapshot", tests, NULL, NULL);
}
