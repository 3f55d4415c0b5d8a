/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the jail's parts: cgroups (on fake v1 and v2 trees made of
 * plain directories, then for real on this host when root) and the uid pool.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "common/util.h"
#include "jail/cgroup.h"
#include "jail/uidpool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- helpers ---- */

struct tmp {
	char dir[64];
};

static int setup(void **state)
{
	struct tmp *t = xzalloc(sizeof(*t));

	strcpy(t->dir, "/tmp/lg-test-jailparts-XXXXXX");
	if (mkdtemp(t->dir) == NULL)
		return -1;
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct tmp *t = *state;

	lg_rm_rf(t->dir);
	free(t);
	return 0;
}

static void put(const char *path, const char *text)
{
	cleanup_close int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(lg_write_all(fd, text, strlen(text)), (ssize_t)strlen(text));
}

static void putf(const char *text, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(const char *text, const char *fmt, ...)
{
	cleanup_free char *p = NULL;
	va_list ap;

	va_start(ap, fmt);
	assert_true(vasprintf(&p, fmt, ap) >= 0);
	va_end(ap);
	put(p, text);
}

/* The file's content, or NULL if it does not exist. */
static char *get(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *get(const char *fmt, ...)
{
	cleanup_free char *p = NULL;
	cleanup_close int fd = -1;
	char *buf = xmalloc(4096);
	ssize_t n;
	va_list ap;

	va_start(ap, fmt);
	assert_true(vasprintf(&p, fmt, ap) >= 0);
	va_end(ap);
	fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		free(buf);
		return NULL;
	}
	n = lg_read_all(fd, buf, 4095);
	assert_true(n >= 0);
	buf[n] = '\0';
	return buf;
}

static bool exists(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static bool exists(const char *fmt, ...)
{
	cleanup_free char *p = NULL;
	va_list ap;

	va_start(ap, fmt);
	assert_true(vasprintf(&p, fmt, ap) >= 0);
	va_end(ap);
	return access(p, F_OK) == 0;
}

static void assert_file(const char *want, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void assert_file(const char *want, const char *fmt, ...)
{
	cleanup_free char *p = NULL;
	cleanup_free char *got = NULL;
	va_list ap;

	va_start(ap, fmt);
	assert_true(vasprintf(&p, fmt, ap) >= 0);
	va_end(ap);
	got = get("%s", p);
	if (got == NULL)
		fail_msg("%s does not exist", p);
	/* The kernel's files end in a newline, ours (fake) do not. */
	got[strcspn(got, "\n")] = '\0';
	assert_string_equal(got, want);
}

/* Removes the plain files of a fake cgroup directory (cgroupfs needs no such step). */
static void empty_dir(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void empty_dir(const char *fmt, ...)
{
	cleanup_free char *p = NULL;
	DIR *d;
	struct dirent *e;
	va_list ap;

	va_start(ap, fmt);
	assert_true(vasprintf(&p, fmt, ap) >= 0);
	va_end(ap);
	d = opendir(p);
	assert_non_null(d);
	while ((e = readdir(d)) != NULL)
		if (e->d_type == DT_REG)
			assert_int_equal(unlinkat(dirfd(d), e->d_name, 0), 0);
	closedir(d);
}

static void make_dir(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void make_dir(const char *fmt, ...)
{
	cleanup_free char *p = NULL;
	va_list ap;

	va_start(ap, fmt);
	assert_true(vasprintf(&p, fmt, ap) >= 0);
	va_end(ap);
	assert_int_equal(mkdir(p, 0755), 0);
}

static size_t count_entries(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static size_t count_entries(const char *fmt, ...)
{
	cleanup_free char *p = NULL;
	DIR *d;
	struct dirent *e;
	size_t n = 0;
	va_list ap;

	va_start(ap, fmt);
	assert_true(vasprintf(&p, fmt, ap) >= 0);
	va_end(ap);
	d = opendir(p);
	assert_non_null(d);
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

/*
 * A fake v1 host: memory and pids each on a hierarchy, cpu co-mounted with
 * cpuacct, a name=systemd hierarchy to be ignored, and the unified mount
 * of a hybrid host.  The mount point of memory has a space in it, escaped
 * in mountinfo as the kernel does.
 */
static char *fake_v1(const struct tmp *t, bool with_pids, bool memsw)
{
	char *mi = xasprintf("%s/mountinfo", t->dir);
	cleanup_free char *text = NULL;

	cleanup_free char *pids_line = NULL;
	static const char *const dirs[] = {"mem ory", "pids", "cpu,cpuacct", "systemd", "unified"};

	for (size_t i = 0; i < ARRAY_SIZE(dirs); i++)
		make_dir("%s/%s", t->dir, dirs[i]);
	if (memsw)
		putf("", "%s/mem ory/memory.memsw.limit_in_bytes", t->dir);
	pids_line = with_pids ? xasprintf("39 31 0:36 / %s/pids rw,relatime - cgroup cgroup "
					  "rw,pids\n",
					  t->dir)
			      : xstrdup("");
	text = xasprintf(
	    "22 1 0:21 / /proc rw,nosuid - proc proc rw\n"
	    "31 23 0:28 / %1$s ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755\n"
	    "32 31 0:29 / %1$s/cpu,cpuacct rw,relatime shared:10 - cgroup cgroup "
	    "rw,cpu,cpuacct\n"
	    "35 31 0:32 / %1$s/mem\\040ory rw,relatime shared:11 - cgroup cgroup rw,memory\n"
	    "%2$s"
	    "40 31 0:37 / %1$s/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd\n"
	    "41 31 0:38 / %1$s/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n",
	    t->dir, pids_line);
	put(mi, text);
	return mi;
}

static char *fake_v2(const struct tmp *t, const char *controllers)
{
	char *mi = xasprintf("%s/mountinfo", t->dir);
	cleanup_free char *text = NULL;

	make_dir("%s/cg2", t->dir);
	putf(controllers, "%s/cg2/cgroup.controllers", t->dir);
	putf("", "%s/cg2/cgroup.subtree_control", t->dir);
	/* What the kernel would put in "luminaguard" once the root enables memory. */
	make_dir("%s/cg2/luminaguard", t->dir);
	putf("", "%s/cg2/luminaguard/cgroup.subtree_control", t->dir);
	putf("max", "%s/cg2/luminaguard/memory.swap.max", t->dir);
	text = xasprintf("22 1 0:21 / /proc rw,nosuid - proc proc rw\n"
			 "31 23 0:28 / %s/cg2 rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 "
			 "cgroup2 rw,nsdelegate,memory_recursiveprot\n",
			 t->dir);
	put(mi, text);
	return mi;
}

/* ---- cgroups on fake trees ---- */

static void test_detect(void **state)
{
	struct tmp *t = *state;
	cleanup_free char *mi = NULL;
	cleanup_free char *none = xasprintf("%s/none", t->dir);
	cleanup_free char *hybrid_empty = xasprintf("%s/hy", t->dir);

	mi = fake_v1(t, true, false);
	assert_int_equal(lg_cgroup_detect(mi), LG_CGROUP_V1);
	put(none, "22 1 0:21 / /proc rw,nosuid - proc proc rw\n");
	assert_int_equal(lg_cgroup_detect(none), LG_CGROUP_NONE);
	assert_int_equal(lg_cgroup_detect("/nonexistent/mountinfo"), LG_CGROUP_NONE);
	/* Only a name=systemd v1 hierarchy and an empty cgroup2: that is v2. */
	put(hybrid_empty, "40 31 0:37 / /x/systemd rw - cgroup cgroup rw,xattr,name=systemd\n"
			  "41 31 0:38 / /x/unified rw - cgroup2 cgroup2 rw\n");
	assert_int_equal(lg_cgroup_detect(hybrid_empty), LG_CGROUP_V2);
	/* The host says something; which is this machine's business. */
	assert_true(lg_cgroup_detect(NULL) != LG_CGROUP_NONE || access("/sys/fs/cgroup", F_OK));
}

static void test_v2_detect(void **state)
{
	struct tmp *t = *state;
	cleanup_free char *mi = fake_v2(t, "cpuset cpu io memory pids\n");

	assert_int_equal(lg_cgroup_detect(mi), LG_CGROUP_V2);
}

static void test_bad_names(void **state)
{
	struct tmp *t = *state;
	cleanup_free char *mi = fake_v1(t, true, false);
	static const char *const bad[] = {
	    "",
	    "..",
	    "../x",
	    "a/b",
	    ".hidden",
	    "a..b",
	    "a b",
	    "-rf",
	    "x\n",
	    "é",
	    "a;b",
	    "0123456789012345678901234567890123456789012345678901234567890123"
	    "4"};
	struct lg_cgroup_limits l = {.memory_bytes = 1 << 20};

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct lg_cgroup *cg = (struct lg_cgroup *)0x1;
		struct lg_err *err = NULL;

		assert_true(lg_cgroup_create(mi, bad[i], &l, &cg, &err) < 0);
		assert_null(cg);
		assert_non_null(err);
		assert_int_equal(err->errnum, EINVAL);
		lg_err_free(&err);
	}
	/* Nothing was created anywhere. */
	assert_false(exists("%s/mem ory/luminaguard", t->dir));
	assert_false(exists("%s/pids/luminaguard", t->dir));
	assert_false(exists("%s/x", t->dir));
}

static void test_v1_fake(void **state)
{
	struct tmp *t = *state;
	cleanup_free char *mi = fake_v1(t, true, true);
	struct lg_cgroup_limits l = {.memory_bytes = 64ull << 20, .pids_max = 32, .cpus = 2};
	struct lg_cgroup *cg = NULL, *dup = NULL;
	struct lg_err *err = NULL;
	int fds[LG_CGROUP_MAX_PROCS_FDS];
	size_t n;

	if (lg_cgroup_create(mi, "vm-1.a_b", &l, &cg, &err) < 0)
		fail_msg("create: %s", err->msg);
	assert_non_null(cg);
	assert_file("67108864", "%s/mem ory/luminaguard/vm-1.a_b/memory.limit_in_bytes", t->dir);
	assert_file("67108864", "%s/mem ory/luminaguard/vm-1.a_b/memory.memsw.limit_in_bytes",
		    t->dir);
	assert_file("32", "%s/pids/luminaguard/vm-1.a_b/pids.max", t->dir);
	assert_file("100000", "%s/cpu,cpuacct/luminaguard/vm-1.a_b/cpu.cfs_period_us", t->dir);
	assert_file("200000", "%s/cpu,cpuacct/luminaguard/vm-1.a_b/cpu.cfs_quota_us", t->dir);
	/* Each hierarchy got only its own controller's files. */
	assert_int_equal(count_entries("%s/mem ory/luminaguard/vm-1.a_b", t->dir), 2);
	assert_int_equal(count_entries("%s/pids/luminaguard/vm-1.a_b", t->dir), 1);
	assert_int_equal(count_entries("%s/cpu,cpuacct/luminaguard/vm-1.a_b", t->dir), 2);
	/* Hierarchies without our controllers are left alone. */
	assert_false(exists("%s/systemd/luminaguard", t->dir));
	assert_false(exists("%s/unified/luminaguard", t->dir));

	/* The same name again is refused, and the first one is untouched. */
	assert_true(lg_cgroup_create(mi, "vm-1.a_b", &l, &dup, &err) < 0);
	assert_null(dup);
	assert_int_equal(err->errnum, EEXIST);
	assert_non_null(strstr(err->msg, "already exists"));
	lg_err_free(&err);
	assert_file("32", "%s/pids/luminaguard/vm-1.a_b/pids.max", t->dir);

	/* One procs fd per hierarchy (the kernel makes cgroup.procs; we fake it). */
	putf("", "%s/mem ory/luminaguard/vm-1.a_b/cgroup.procs", t->dir);
	putf("", "%s/pids/luminaguard/vm-1.a_b/cgroup.procs", t->dir);
	putf("", "%s/cpu,cpuacct/luminaguard/vm-1.a_b/cgroup.procs", t->dir);
	n = lg_cgroup_procs_fds(cg, fds, ARRAY_SIZE(fds));
	assert_int_equal(n, 3);
	for (size_t i = 0; i < n; i++) {
		assert_true(fcntl(fds[i], F_GETFD) & FD_CLOEXEC);
		assert_int_equal(fcntl(fds[i], F_GETFL) & O_ACCMODE, O_WRONLY);
		close(fds[i]);
	}
	assert_int_equal(lg_cgroup_procs_fds(cg, fds, 1), 1);
	close(fds[0]);

	/* OOM: the oom_kill count of memory.oom_control (Linux >= 4.13). */
	putf("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
	     "%s/mem ory/luminaguard/vm-1.a_b/memory.oom_control", t->dir);
	assert_false(lg_cgroup_oom_killed(cg));
	putf("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
	     "%s/mem ory/luminaguard/vm-1.a_b/memory.oom_control", t->dir);
	assert_true(lg_cgroup_oom_killed(cg));
	/* Older kernels: no oom_kill line, the fail count says it. */
	putf("oom_kill_disable 0\nunder_oom 0\n",
	     "%s/mem ory/luminaguard/vm-1.a_b/memory.oom_control", t->dir);
	putf("0\n", "%s/mem ory/luminaguard/vm-1.a_b/memory.failcnt", t->dir);
	assert_false(lg_cgroup_oom_killed(cg));
	putf("12\n", "%s/mem ory/luminaguard/vm-1.a_b/memory.failcnt", t->dir);
	assert_true(lg_cgroup_oom_killed(cg));

	/* Destroy removes the directories (the fake files go first). */
	empty_dir("%s/mem ory/luminaguard/vm-1.a_b", t->dir);
	empty_dir("%s/pids/luminaguard/vm-1.a_b", t->dir);
	empty_dir("%s/cpu,cpuacct/luminaguard/vm-1.a_b", t->dir);
	lg_cgroup_destroy(cg);
	assert_false(exists("%s/mem ory/luminaguard", t->dir));
	assert_false(exists("%s/pids/luminaguard", t->dir));
	assert_false(exists("%s/cpu,cpuacct/luminaguard", t->dir));
	lg_cgroup_destroy(NULL);
}

static void test_v1_fake_options(void **state)
{
	struct tmp *t = *state;
	cleanup_free char *mi = fake_v1(t, false, false);
	struct lg_cgroup_limits l = {.memory_bytes = 1 << 20, .pids_max = 8};
	struct lg_cgroup_limits nopids = {.memory_bytes = 1 << 20};
	struct lg_cgroup *cg = NULL;
	struct lg_err *err = NULL;

	/* A limit whose controller is not mounted is an error, and nothing is left. */
	assert_true(lg_cgroup_create(mi, "vm2", &l, &cg, &err) < 0);
	assert_null(cg);
	assert_non_null(strstr(err->msg, "pids controller is not mounted"));
	lg_err_free(&err);
	assert_false(exists("%s/mem ory/luminaguard", t->dir));
	assert_false(exists("%s/cpu,cpuacct/luminaguard", t->dir));

	/* Without swap accounting only memory.limit_in_bytes is written. */
	if (lg_cgroup_create(mi, "vm2", &nopids, &cg, &err) < 0)
		fail_msg("create: %s", err->msg);
	assert_file("1048576", "%s/mem ory/luminaguard/vm2/memory.limit_in_bytes", t->dir);
	assert_false(exists("%s/mem ory/luminaguard/vm2/memory.memsw.limit_in_bytes", t->dir));
	/* No cpu limit asked: the cpu cgroup exists, its quota is not touched. */
	assert_int_equal(count_entries("%s/cpu,cpuacct/luminaguard/vm2", t->dir), 0);
	empty_dir("%s/mem ory/luminaguard/vm2", t->dir);
	/* Another VM's cgroup keeps the shared parent alive. */
	make_dir("%s/mem ory/luminaguard/other", t->dir);
	lg_cgroup_destroy(cg);
	assert_false(exists("%s/mem ory/luminaguard/vm2", t->dir));
	assert_true(exists("%s/mem ory/luminaguard/other", t->dir));
	assert_false(exists("%s/cpu,cpuacct/luminaguard", t->dir));
}

static void test_v2_fake(void **state)
{
	struct tmp *t = *state;
	cleanup_free char *mi = fake_v2(t, "cpuset cpu io memory hugetlb pids rdma misc\n");
	struct lg_cgroup_limits l = {.memory_bytes = 100 << 20, .pids_max = 64, .cpus = 1};
	struct lg_cgroup *cg = NULL;
	struct lg_err *err = NULL;
	int fd;

	if (lg_cgroup_create(mi, "vm3", &l, &cg, &err) < 0)
		fail_msg("create: %s", err->msg);
	assert_file("+memory +pids +cpu", "%s/cg2/cgroup.subtree_control", t->dir);
	assert_file("+memory +pids +cpu", "%s/cg2/luminaguard/cgroup.subtree_control", t->dir);
	assert_file("104857600", "%s/cg2/luminaguard/vm3/memory.max", t->dir);
	assert_file("0", "%s/cg2/luminaguard/vm3/memory.swap.max", t->dir);
	assert_file("64", "%s/cg2/luminaguard/vm3/pids.max", t->dir);
	assert_file("100000 100000", "%s/cg2/luminaguard/vm3/cpu.max", t->dir);
	assert_int_equal(count_entries("%s/cg2/luminaguard/vm3", t->dir), 4);

	putf("", "%s/cg2/luminaguard/vm3/cgroup.procs", t->dir);
	assert_int_equal(lg_cgroup_procs_fds(cg, &fd, 1), 1);
	close(fd);

	putf("low 0\nhigh 0\nmax 17\noom 0\noom_kill 0\noom_group_kill 0\n",
	     "%s/cg2/luminaguard/vm3/memory.events", t->dir);
	assert_false(lg_cgroup_oom_killed(cg));
	putf("low 0\nhigh 0\nmax 17\noom 1\noom_kill 1\noom_group_kill 0\n",
	     "%s/cg2/luminaguard/vm3/memory.events", t->dir);
	assert_true(lg_cgroup_oom_killed(cg));

	empty_dir("%s/cg2/luminaguard/vm3", t->dir);
	empty_dir("%s/cg2/luminaguard", t->dir);
	lg_cgroup_destroy(cg);
	assert_false(exists("%s/cg2/luminaguard", t->dir));
}

static void test_v2_fake_controllers(void **state)
{
	struct tmp *t = *state;
	/* A delegated cgroup without pids, already enabling memory. */
	cleanup_free char *mi = fake_v2(t, "cpu memory\n");
	struct lg_cgroup_limits l = {.memory_bytes = 1 << 20, .pids_max = 8};
	struct lg_cgroup_limits mem = {.memory_bytes = 1 << 20};
	struct lg_cgroup *cg = NULL;
	struct lg_err *err = NULL;

	assert_true(lg_cgroup_create(mi, "vm4", &l, &cg, &err) < 0);
	assert_null(cg);
	assert_non_null(strstr(err->msg, "pids controller is not available"));
	lg_err_free(&err);
	assert_false(exists("%s/cg2/luminaguard/vm4", t->dir));

	/* Already enabled controllers are not written again. */
	putf("memory pids cpu", "%s/cg2/cgroup.subtree_control", t->dir);
	putf("memory", "%s/cg2/luminaguard/cgroup.subtree_control", t->dir);
	{
		cleanup_free char *swap = xasprintf("%s/cg2/luminaguard/memory.swap.max", t->dir);

		assert_int_equal(unlink(swap), 0);
	}
	if (lg_cgroup_create(mi, "vm4", &mem, &cg, &err) < 0)
		fail_msg("create: %s", err->msg);
	assert_file("memory pids cpu", "%s/cg2/cgroup.subtree_control", t->dir);
	assert_file("+pids +cpu", "%s/cg2/luminaguard/cgroup.subtree_control", t->dir);
	assert_file("1048576", "%s/cg2/luminaguard/vm4/memory.max", t->dir);
	/* No swap accounting: no memory.swap.max. */
	assert_false(exists("%s/cg2/luminaguard/vm4/memory.swap.max", t->dir));
	/*
	 * cgroup.kill (Linux 5.14) is how v2 kills: destroy writes "1".  The
	 * fake file keeps the fake directory from going (cgroupfs would not).
	 */
	empty_dir("%s/cg2/luminaguard/vm4", t->dir);
	putf("", "%s/cg2/luminaguard/vm4/cgroup.kill", t->dir);
	lg_cgroup_destroy(cg);
	assert_file("1", "%s/cg2/luminaguard/vm4/cgroup.kill", t->dir);
}

static void test_not_writable(void **state)
{
	/* Root writes anywhere: the real check is the one below.  Before any
	 * allocation: skip() longjmps past the cleanup handlers. */
	if (geteuid() == 0)
		skip();

	struct tmp *t = *state;
	cleanup_free char *mi = fake_v1(t, true, false);
	struct lg_cgroup_limits l = {.memory_bytes = 1 << 20};
	struct lg_cgroup *cg = NULL;
	struct lg_err *err = NULL;
	cleanup_free char *ro = xasprintf("%s/mem ory", t->dir);
	assert_int_equal(chmod(ro, 0555), 0);
	assert_true(lg_cgroup_create(mi, "vm5", &l, &cg, &err) < 0);
	assert_non_null(strstr(err->msg, "cgroups need root"));
	assert_null(strchr(err->msg, '\n'));
	lg_err_free(&err);
	chmod(ro, 0755);
}

/* ---- cgroups for real (root) ---- */

/*
 * The directory of our cgroup for one controller on this host, from the
 * standard mount points; NULL when the host mounts them elsewhere.
 */
static char *real_dir(enum lg_cgroup_version v, const char *ctl, const char *name)
{
	char *p = v == LG_CGROUP_V2 ? xasprintf("/sys/fs/cgroup/luminaguard/%s", name)
				    : xasprintf("/sys/fs/cgroup/%s/luminaguard/%s", ctl, name);

	return p;
}

static bool real_host_ok(enum lg_cgroup_version *v)
{
	if (geteuid() != 0) {
		print_message("not root: real cgroup tests skipped\n");
		return false;
	}
	*v = lg_cgroup_detect(NULL);
	if (*v == LG_CGROUP_V1 &&
	    access("/sys/fs/cgroup/memory/memory.limit_in_bytes", F_OK) == 0 &&
	    access("/sys/fs/cgroup/pids/cgroup.procs", F_OK) == 0 &&
	    access("/sys/fs/cgroup/cpu/cgroup.procs", F_OK) == 0)
		return true;
	if (*v == LG_CGROUP_V2 && access("/sys/fs/cgroup/cgroup.subtree_control", F_OK) == 0)
		return true;
	print_message("cgroups not at the usual /sys/fs/cgroup places: real tests skipped\n");
	return false;
}

/*
 * The real tests keep their cgroup and child here, so that a failed
 * assertion (which longjmps out of the test) still leaves nothing behind.
 */
struct real {
	struct lg_cgroup *cg;
	pid_t child;
};

static int real_setup(void **state)
{
	*state = xzalloc(sizeof(struct real));
	return 0;
}

static int real_teardown(void **state)
{
	struct real *r = *state;

	if (r->child > 0) {
		kill(r->child, SIGKILL);
		waitpid(r->child, NULL, 0);
	}
	lg_cgroup_destroy(r->cg);
	free(r);
	return 0;
}

/* Forks a child that joins the cgroup through the procs fds, tells us, then runs fn. */
static pid_t spawn_in(struct lg_cgroup *cg, void (*fn)(void))
{
	int fds[LG_CGROUP_MAX_PROCS_FDS], p[2];
	size_t n = lg_cgroup_procs_fds(cg, fds, ARRAY_SIZE(fds));
	pid_t pid;
	char c;

	assert_true(n >= 1);
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		for (size_t i = 0; i < n; i++)
			if (write(fds[i], "0", 1) != 1)
				_exit(100 + (int)i);
		if (write(p[1], "x", 1) != 1)
			_exit(99);
		fn();
		_exit(0);
	}
	close(p[1]);
	for (size_t i = 0; i < n; i++)
		close(fds[i]);
	assert_int_equal(read(p[0], &c, 1), 1);
	close(p[0]);
	return pid;
}

static void just_pause(void)
{
	for (;;)
		pause();
}

static void eat_memory(void)
{
	/* 64 MiB, touched page by page, in a 16 MiB cgroup. */
	size_t n = 64u << 20;
	volatile char *m = malloc(n);

	if (m == NULL)
		_exit(2);
	for (size_t i = 0; i < n; i += 4096)
		m[i] = 1;
	_exit(3);
}

static void test_real(void **state)
{
	struct real *rs = *state;
	enum lg_cgroup_version v;
	char name[48];
	struct lg_cgroup_limits l = {.memory_bytes = 32u << 20, .pids_max = 16, .cpus = 1};
	struct lg_cgroup *cg = NULL;
	struct lg_err *err = NULL;
	cleanup_free char *mem = NULL, *pids = NULL, *cpu = NULL, *self = NULL;
	int status;
	pid_t pid;

	if (!real_host_ok(&v))
		skip();
	snprintf(name, sizeof(name), "lgtest-%ld", (long)getpid());
	if (lg_cgroup_create(NULL, name, &l, &cg, &err) < 0)
		fail_msg("create: %s", err->msg);
	rs->cg = cg;
	mem = real_dir(v, "memory", name);
	pids = real_dir(v, "pids", name);
	cpu = real_dir(v, "cpu", name);
	if (v == LG_CGROUP_V1) {
		assert_file("33554432", "%s/memory.limit_in_bytes", mem);
		if (exists("%s/memory.memsw.limit_in_bytes", mem))
			assert_file("33554432", "%s/memory.memsw.limit_in_bytes", mem);
		assert_file("16", "%s/pids.max", pids);
		assert_file("100000", "%s/cpu.cfs_period_us", cpu);
		assert_file("100000", "%s/cpu.cfs_quota_us", cpu);
	} else {
		assert_file("33554432", "%s/memory.max", mem);
		assert_file("16", "%s/pids.max", mem);
		assert_file("100000 100000", "%s/cpu.max", mem);
	}

	pid = spawn_in(cg, just_pause);
	rs->child = pid;
	self = get("/proc/%ld/cgroup", (long)pid);
	assert_non_null(self);
	{
		cleanup_free char *want_mem = v == LG_CGROUP_V1
						  ? xasprintf(":memory:/luminaguard/%s\n", name)
						  : xasprintf("0::/luminaguard/%s\n", name);
		cleanup_free char *want_pids = xasprintf(":pids:/luminaguard/%s\n", name);

		if (strstr(self, want_mem) == NULL)
			fail_msg("child not in %s: %s", want_mem, self);
		if (v == LG_CGROUP_V1 && strstr(self, want_pids) == NULL)
			fail_msg("child not in %s: %s", want_pids, self);
	}
	/* The pid is listed; destroy kills what is left inside. */
	{
		cleanup_free char *procs = get("%s/cgroup.procs", mem);
		char want[32];

		snprintf(want, sizeof(want), "%ld\n", (long)pid);
		assert_non_null(strstr(procs, want));
	}
	assert_false(lg_cgroup_oom_killed(cg));
	rs->cg = NULL;
	lg_cgroup_destroy(cg);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	rs->child = 0;
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGKILL);
	assert_false(exists("%s", mem));
	assert_false(exists("%s", pids));
	assert_false(exists("%s", cpu));
}

static void test_real_oom(void **state)
{
	struct real *rs = *state;
	enum lg_cgroup_version v;
	char name[48];
	struct lg_cgroup_limits l = {.memory_bytes = 16u << 20, .pids_max = 4};
	struct lg_cgroup *cg = NULL;
	struct lg_err *err = NULL;
	cleanup_free char *mem = NULL;
	int status;
	pid_t pid;

	if (!real_host_ok(&v))
		skip();
	snprintf(name, sizeof(name), "lgtest-oom-%ld", (long)getpid());
	if (lg_cgroup_create(NULL, name, &l, &cg, &err) < 0)
		fail_msg("create: %s", err->msg);
	rs->cg = cg;
	mem = real_dir(v, "memory", name);
	pid = spawn_in(cg, eat_memory);
	rs->child = pid;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	rs->child = 0;
	if (!WIFSIGNALED(status))
		fail_msg("64 MiB in a 16 MiB cgroup: exited with %d instead of being killed",
			 WEXITSTATUS(status));
	assert_int_equal(WTERMSIG(status), SIGKILL);
	assert_true(lg_cgroup_oom_killed(cg));
	rs->cg = NULL;
	lg_cgroup_destroy(cg);
	assert_false(exists("%s", mem));
}

/* An unprivileged user gets one clear line, and nothing is created. */
static void test_real_unprivileged(void **state)
{
	enum lg_cgroup_version v;
	char msg[512] = "";
	int p[2], status;
	pid_t pid;
	ssize_t n;

	(void)state;
	if (!real_host_ok(&v))
		skip();
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct lg_cgroup_limits l = {.memory_bytes = 1 << 20};
		struct lg_cgroup *cg = NULL;
		struct lg_err *err = NULL;

		if (setresgid(65534, 65534, 65534) < 0 || setresuid(65534, 65534, 65534) < 0)
			_exit(2);
		if (lg_cgroup_create(NULL, "lgtest-nobody", &l, &cg, &err) == 0)
			_exit(3);
		(void)!write(p[1], err->msg, strlen(err->msg));
		_exit(0);
	}
	close(p[1]);
	n = read(p[0], msg, sizeof(msg) - 1);
	close(p[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_true(n > 0);
	msg[n] = '\0';
	if (strstr(msg, "cgroups need root") == NULL)
		fail_msg("unclear error: %s", msg);
	assert_null(strchr(msg, '\n'));
	assert_false(exists("%s", "/sys/fs/cgroup/memory/luminaguard/lgtest-nobody"));
	assert_false(exists("%s", "/sys/fs/cgroup/luminaguard/lgtest-nobody"));
}

/* ---- uid pool ---- */

#define UID0 2100000000u

static char *lockdir(const struct tmp *t)
{
	return xasprintf("%s/uids", t->dir);
}

static bool pool_ok(void)
{
	if (geteuid() != 0) {
		print_message("not root: the uid pool's lock directory must be root's; skipped\n");
		return false;
	}
	return true;
}

static void test_uid_two_leases(void **state)
{
	struct tmp *t = *state;
	cleanup_free char *dir = lockdir(t);
	struct lg_uid_lease a, b;
	struct lg_err *err = NULL;
	struct stat st;

	if (!pool_ok())
		skip();
	if (lg_uid_acquire(dir, UID0, UID0 + 65535, &a, &err) < 0)
		fail_msg("%s", err->msg);
	assert_int_equal(lg_uid_acquire(dir, UID0, UID0 + 65535, &b, &err), 0);
	assert_true(a.uid != b.uid);
	assert_true(a.uid >= UID0 && a.uid <= UID0 + 65535);
	assert_true(b.uid >= UID0 && b.uid <= UID0 + 65535);
	assert_true(fcntl(a.lock_fd, F_GETFD) & FD_CLOEXEC);
	/* The directory was created private to root; the lock files too. */
	assert_int_equal(lstat(dir, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0700);
	assert_int_equal(stat(a.path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_true(exists("%s/%u", dir, (unsigned)a.uid));
	assert_true(exists("%s/%u", dir, (unsigned)b.uid));
	lg_uid_release(&a);
	lg_uid_release(&b);
	assert_int_equal(a.lock_fd, -1);
	assert_null(a.path);
	assert_int_equal(count_entries("%s", dir), 0);
	/* A zeroed lease is released without touching fd 0. */
	{
		int fd0_before = fcntl(0, F_GETFD);

		memset(&a, 0, sizeof(a));
		lg_uid_release(&a);
		assert_int_equal(fcntl(0, F_GETFD), fd0_before);
	}
	lg_uid_release(NULL);
}

static void test_uid_other_process(void **state)
{
	struct tmp *t = *state;
	cleanup_free char *dir = lockdir(t);
	struct lg_uid_lease mine, again;
	struct lg_err *err = NULL;
	int to_child[2], from_child[2], status;
	unsigned child_uid = 0;
	pid_t pid;
	char c = 0;

	if (!pool_ok())
		skip();
	assert_int_equal(pipe2(to_child, O_CLOEXEC), 0);
	assert_int_equal(pipe2(from_child, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct lg_uid_lease l;

		if (lg_uid_acquire(dir, UID0, UID0 + 1, &l, NULL) < 0)
			_exit(2);
		if (write(from_child[1], &l.uid, sizeof(l.uid)) != sizeof(l.uid))
			_exit(3);
		if (read(to_child[0], &c, 1) != 1)
			_exit(4);
		if (c == 'r')
			lg_uid_release(&l);
		_exit(0); /* 'x': exit holding it: the kernel drops the lock */
	}
	close(to_child[0]);
	close(from_child[1]);
	assert_int_equal(read(from_child[0], &child_uid, sizeof(child_uid)), sizeof(child_uid));

	/* The child's uid is skipped, every time. */
	for (int i = 0; i < 20; i++) {
		if (lg_uid_acquire(dir, UID0, UID0 + 1, &mine, &err) < 0)
			fail_msg("%s", err->msg);
		assert_true(mine.uid != child_uid);
		if (i < 19)
			lg_uid_release(&mine);
	}
	/* Both taken: a clear error. */
	assert_true(lg_uid_acquire(dir, UID0, UID0 + 1, &again, &err) < 0);
	assert_int_equal(err->errnum, EAGAIN);
	assert_non_null(strstr(err->msg, "no free per-VM uid"));
	assert_non_null(strstr(err->msg, "2100000000-2100000001"));
	lg_err_free(&err);

	/* The child releases: its uid is free again. */
	assert_int_equal(write(to_child[1], "r", 1), 1);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	if (lg_uid_acquire(dir, UID0, UID0 + 1, &again, &err) < 0)
		fail_msg("%s", err->msg);
	assert_int_equal(again.uid, child_uid);
	lg_uid_release(&again);
	lg_uid_release(&mine);
	assert_int_equal(count_entries("%s", dir), 0);
	close(to_child[1]);
	close(from_child[0]);
}

/*
 * Processes taking and giving back the same two uids as fast as they can:
 * never may two of them hold one uid at once.  Each holder proves it by
 * creating held-<uid> with O_EXCL while it holds the lease.
 */
static void test_uid_race(void **state)
{
	struct tmp *t = *state;
	cleanup_free char *dir = lockdir(t);
	enum { PROCS = 4, ROUNDS = 2000 };
	pid_t pids[PROCS];

	if (!pool_ok())
		skip();
	for (int p = 0; p < PROCS; p++) {
		pids[p] = fork();
		assert_true(pids[p] >= 0);
		if (pids[p] > 0)
			continue;
		for (int r = 0; r < ROUNDS; r++) {
			struct lg_uid_lease l;
			struct lg_err *err = NULL;
			char held[128];
			int fd;

			if (lg_uid_acquire(dir, UID0, UID0 + 1, &l, &err) < 0) {
				if (err->errnum != EAGAIN)
					_exit(2);
				lg_err_free(&err);
				continue;
			}
			snprintf(held, sizeof(held), "%s/../held-%u", dir, (unsigned)l.uid);
			fd = open(held, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
			if (fd < 0)
				_exit(3); /* someone else holds this uid too */
			close(fd);
			unlink(held);
			lg_uid_release(&l);
		}
		_exit(0);
	}
	for (int p = 0; p < PROCS; p++) {
		int status;

		assert_int_equal(waitpid(pids[p], &status, 0), pids[p]);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			fail_msg("process %d: status %#x (3 = a uid held twice)", p, status);
	}
	assert_int_equal(count_entries("%s", dir), 0);
}

static void test_uid_stale_file(void **state)
{
	struct tmp *t = *state;
	cleanup_free char *dir = lockdir(t);
	struct lg_uid_lease l;
	struct lg_err *err = NULL;

	if (!pool_ok())
		skip();
	/* A file left by a crashed run (no lock) is simply taken. */
	make_dir("%s", dir);
	assert_int_equal(chmod(dir, 0700), 0);
	putf("12345\n", "%s/%u", dir, UID0 + 7);
	if (lg_uid_acquire(dir, UID0 + 7, UID0 + 7, &l, &err) < 0)
		fail_msg("%s", err->msg);
	assert_int_equal(l.uid, UID0 + 7);
	lg_uid_release(&l);
	assert_int_equal(count_entries("%s", dir), 0);
}

static void test_uid_bad_dirs(void **state)
{
	struct tmp *t = *state;
	cleanup_free char *dir = lockdir(t);
	cleanup_free char *link = xasprintf("%s/link", t->dir);
	cleanup_free char *open_dir = xasprintf("%s/open", t->dir);
	struct lg_uid_lease l;
	struct lg_err *err = NULL;

	if (!pool_ok())
		skip();
	/* Bad ranges. */
	assert_true(lg_uid_acquire(dir, 0, 10, &l, &err) < 0);
	assert_int_equal(err->errnum, EINVAL);
	lg_err_free(&err);
	assert_true(lg_uid_acquire(dir, 20, 10, &l, &err) < 0);
	lg_err_free(&err);
	assert_true(lg_uid_acquire(dir, 10, (uid_t)-1, &l, &err) < 0);
	lg_err_free(&err);

	/* A symlink is refused, even to a good directory. */
	make_dir("%s", dir);
	assert_int_equal(chmod(dir, 0700), 0);
	assert_int_equal(symlink(dir, link), 0);
	assert_true(lg_uid_acquire(link, UID0, UID0 + 10, &l, &err) < 0);
	assert_non_null(strstr(err->msg, "symlink"));
	lg_err_free(&err);

	/* Writable by others: refused. */
	make_dir("%s", open_dir);
	assert_int_equal(chmod(open_dir, 01777), 0);
	assert_true(lg_uid_acquire(open_dir, UID0, UID0 + 10, &l, &err) < 0);
	assert_non_null(strstr(err->msg, "owned by root and writable by nobody else"));
	lg_err_free(&err);

	/* Not root's: refused. */
	assert_int_equal(chmod(open_dir, 0700), 0);
	assert_int_equal(chown(open_dir, 65534, 65534), 0);
	assert_true(lg_uid_acquire(open_dir, UID0, UID0 + 10, &l, &err) < 0);
	assert_non_null(strstr(err->msg, "owned by root"));
	lg_err_free(&err);
	assert_int_equal(count_entries("%s", dir), 0);
	assert_int_equal(count_entries("%s", open_dir), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_detect, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_v2_detect, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_names, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_v1_fake, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_v1_fake_options, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_v2_fake, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_v2_fake_controllers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_not_writable, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_real, real_setup, real_teardown),
	    cmocka_unit_test_setup_teardown(test_real_oom, real_setup, real_teardown),
	    cmocka_unit_test(test_real_unprivileged),
	    cmocka_unit_test_setup_teardown(test_uid_two_leases, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_uid_other_process, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_uid_race, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_uid_stale_file, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_uid_bad_dirs, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
