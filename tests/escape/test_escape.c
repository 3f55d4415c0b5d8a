/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Escape tests: a hostile program (hostile.c) runs in the jail in place of
 * the VMM and tries its way out, once under the real QEMU seccomp profile
 * and once with seccomp off, so that each wall is tested on its own: the
 * jail alone must stop every attack with an error, and seccomp may stop
 * some of them first by killing the process.  The host must stay healthy,
 * and nothing may be left behind.  Needs root (skips without).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "common/util.h"
#include "jail/jail.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <linux/keyctl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* A uid range of our own, so that VMs run by others meanwhile do not count. */
#define UID_FIRST 2100070000u
#define UID_LAST  2100070063u
#define UID_DIR	  "/run/luminaguard/uids"

#define MEMORY_LIMIT (64ull << 20)
#define PIDS_LIMIT   32
#define FSIZE_LIMIT  (1ull << 20)
#define SECRET	     "the other VM's disk\n"
#define KEY_DESC     "lg-escape-secret"
#define KEY_SECRET   "the agent's API token"

static struct {
	char dir[64];
	char *secret;  /* a host file the jail must not show */
	int listen_fd; /* a host service on 127.0.0.1 */
	char port[8];
	pid_t victim; /* a host process to kill or ptrace */
	char victim_s[16];
	char *mounts;	     /* /proc/self/mountinfo before */
	char names[128][32]; /* cgroup names used */
	size_t n_names;
} g;

struct result {
	bool have_line;
	char outcome[1024]; /* after "RESULT <attack> " */
	int status;
	char *explain;
};

static char *slurp(const char *path)
{
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t cap = 65536, n = 0;
	char *buf;

	if (fd < 0)
		return NULL;
	buf = xmalloc(cap);
	for (;;) {
		ssize_t r = read(fd, buf + n, cap - n - 1);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
		if (n + 1 == cap)
			buf = xrealloc(buf, cap *= 2);
	}
	buf[n] = '\0';
	return buf;
}

/* Runs the hostile program jailed (or not, for the control runs). */
static void run(const char *attack, const char *arg, enum lg_seccomp_level lvl, bool disabled,
		struct result *res)
{
	struct jail_opts opts = {
	    .disabled = disabled, .seccomp = lvl, .uid_first = UID_FIRST, .uid_last = UID_LAST};
	char *const argv[] = {(char *)LG_HOSTILE, (char *)attack, (char *)arg, NULL};
	struct jail *j = NULL;
	struct lg_err *err = NULL;
	char buf[2048];
	size_t n = 0;
	uint64_t deadline;
	int p[2];
	pid_t pid;

	memset(res, 0, sizeof(*res));
	assert_true(g.n_names < ARRAY_SIZE(g.names));
	snprintf(g.names[g.n_names], sizeof(g.names[0]), "esc-%ld-%zu", (long)getpid(), g.n_names);
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	struct jail_spec spec = {
	    .name = g.names[g.n_names++],
	    .vmm_kind = "qemu",
	    .binary = LG_HOSTILE,
	    .argv = argv,
	    .pass_fds = &p[1],
	    .n_pass_fds = 1,
	    .stderr_fd = getenv("LG_ESCAPE_DEBUG") ? 2 : -1,
	    .memory_bytes = MEMORY_LIMIT,
	    .pids_max = PIDS_LIMIT,
	    .cpus = 1,
	    .fsize_bytes = FSIZE_LIMIT,
	    .opts = &opts,
	};
	if (jail_spawn(&spec, &j, &err) < 0)
		fail_msg("%s: jail_spawn: %s", attack, err->msg);
	close(p[1]);
	pid = jail_pid(j);

	/* One line, or EOF (it died), within 60 s. */
	deadline = lg_now_ms() + 60000;
	while (n < sizeof(buf) - 1 && memchr(buf, '\n', n) == NULL) {
		struct pollfd pfd = {.fd = p[0], .events = POLLIN};
		int64_t left = (int64_t)(deadline - lg_now_ms());
		ssize_t r;

		if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
			break;
		r = read(p[0], buf + n, sizeof(buf) - 1 - n);
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	buf[n] = '\0';
	close(p[0]);

	/* Then its end: a forkbomb's pid 1 exits at once, taking its namespace along. */
	deadline = lg_now_ms() + 30000;
	for (;;) {
		pid_t w = waitpid(pid, &res->status, WNOHANG);

		if (w == pid)
			break;
		assert_int_equal(w, 0);
		if (lg_now_ms() > deadline) {
			kill(pid, SIGKILL);
			assert_int_equal(waitpid(pid, &res->status, 0), pid);
			jail_release(j);
			fail_msg("%s: the jailed program did not exit", attack);
		}
		usleep(5000);
	}
	res->explain = jail_explain_exit(j, res->status);
	jail_release(j);

	{
		cleanup_free char *prefix = xasprintf("RESULT %s ", attack);
		char *nl = strchr(buf, '\n');

		if (nl && strncmp(buf, prefix, strlen(prefix)) == 0) {
			*nl = '\0';
			res->have_line = true;
			snprintf(res->outcome, sizeof(res->outcome), "%s", buf + strlen(prefix));
		}
	}
	print_message("  %-11s seccomp=%-6s %s -> %s%s%s\n", attack,
		      disabled ? "nojail" : lg_seccomp_level_name(lvl),
		      res->have_line ? res->outcome : "(no line)",
		      WIFSIGNALED(res->status) ? strsignal(WTERMSIG(res->status)) : "exit",
		      res->explain ? ": " : "", res->explain ? res->explain : "");
}

static void result_free(struct result *r)
{
	free(r->explain);
	r->explain = NULL;
}

/*
 * Like run(), once more after a pause when a seccomp kill came without a
 * syscall name.  Without auditd the kernel prints seccomp's audit records
 * through a rate limit shared by the whole host (printk_ratelimit_burst,
 * usually 10 per 5 s: "kauditd_printk_skb: N callbacks suppressed"), and
 * this test alone kills more than that in a second.  A second miss after
 * the window has passed is a real failure.
 */
static void run_jailed(const char *attack, const char *arg, enum lg_seccomp_level lvl,
		       struct result *res)
{
	run(attack, arg, lvl, false, res);
	if (WIFSIGNALED(res->status) && WTERMSIG(res->status) == SIGSYS &&
	    (res->explain == NULL || strstr(res->explain, "unknown") != NULL)) {
		print_message("  (no audit record: kernel rate limit? again in 6 s)\n");
		result_free(res);
		sleep(6);
		run(attack, arg, lvl, false, res);
	}
}

static bool one_of(const char *s, const char *const *set)
{
	for (; set && *set; set++)
		if (strcmp(s, *set) == 0)
			return true;
	return false;
}

/*
 * The attack must have failed: an outcome in `ok` and a clean exit, or,
 * under strict seccomp when `syscalls` is given, death by SIGSYS with
 * jail_explain_exit naming one of those syscalls.
 */
static void expect(const char *attack, const struct result *r, enum lg_seccomp_level lvl,
		   const char *const *ok, const char *const *syscalls)
{
	if (WIFSIGNALED(r->status) && WTERMSIG(r->status) == SIGSYS) {
		if (lvl != LG_SECCOMP_STRICT || syscalls == NULL)
			fail_msg("%s: unexpected SIGSYS (%s)", attack,
				 r->explain ? r->explain : "no explanation");
		if (r->explain == NULL || strstr(r->explain, "seccomp") == NULL)
			fail_msg("%s: SIGSYS without a seccomp explanation (%s)", attack,
				 r->explain ? r->explain : "NULL");
		for (const char *const *s = syscalls; *s; s++) {
			cleanup_free char *want = xasprintf("syscall %s", *s);
			const char *at = strstr(r->explain, want);

			/* "syscall ptrace" but not "syscall ptrace2". */
			if (at && (at[strlen(want)] == '\0' || at[strlen(want)] == ' ' ||
				   at[strlen(want)] == ')'))
				return;
		}
		fail_msg("%s: killed by seccomp, but the explanation names another syscall: %s",
			 attack, r->explain);
	}
	if (!WIFEXITED(r->status) || WEXITSTATUS(r->status) != 0 || !r->have_line)
		fail_msg("%s: status %#x, line %s", attack, r->status,
			 r->have_line ? r->outcome : "(none)");
	if (!one_of(r->outcome, ok))
		fail_msg("%s: the attack %s (outcome '%s')", attack,
			 strncmp(r->outcome, "ok", 2) == 0 ? "WORKED"
							   : "failed in an unexpected way",
			 r->outcome);
}

static const enum lg_seccomp_level levels[] = {LG_SECCOMP_OFF, LG_SECCOMP_STRICT};

#define SET(...) ((const char *const[]){__VA_ARGS__, NULL})

/* Runs an attack at both seccomp levels and checks the outcome each time. */
static void attack_both(const char *attack, const char *arg, const char *const *ok,
			const char *const *syscalls)
{
	for (size_t i = 0; i < ARRAY_SIZE(levels); i++) {
		struct result r;

		run_jailed(attack, arg, levels[i], &r);
		expect(attack, &r, levels[i], ok, syscalls);
		result_free(&r);
	}
}

static void host_healthy(void)
{
	cleanup_free char *secret = slurp(g.secret);
	int c = accept4(g.listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (c >= 0) {
		close(c);
		fail_msg("the host service on 127.0.0.1:%s got a connection from the jail", g.port);
	}
	assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
	assert_non_null(secret);
	assert_string_equal(secret, SECRET);
	assert_int_equal(kill(g.victim, 0), 0);
	assert_int_equal(waitpid(g.victim, NULL, WNOHANG), 0);
}

/* ---- the attacks ---- */

static void test_shadow(void **state)
{
	(void)state;
	attack_both("shadow", NULL, SET("ENOENT"), NULL);
	host_healthy();
}

static void test_host_file(void **state)
{
	(void)state;
	/* The file is world-readable: only the mount namespace hides it. */
	attack_both("hostfile", g.secret, SET("ENOENT"), NULL);
	attack_both("hostfile", g.dir, SET("ENOENT"), NULL);
	host_healthy();
}

static void test_proc_environ(void **state)
{
	(void)state;
	attack_both("environ", NULL, SET("ENOENT"), NULL);
}

static void test_exec_shell(void **state)
{
	(void)state;
	attack_both("exec", NULL, SET("ENOENT"), SET("execve"));
}

static void test_exec_rundir(void **state)
{
	(void)state;
	/* The one writable directory is noexec. */
	attack_both("exec_rundir", NULL, SET("EACCES"), SET("execve"));
}

static void test_ptrace(void **state)
{
	(void)state;
	/* pid 1 of the jail's PID namespace is the program itself. */
	attack_both("ptrace1", NULL, SET("EPERM", "ESRCH"), SET("ptrace"));
	/* Host pids do not exist in the jail's PID namespace. */
	attack_both("ptrace_host", g.victim_s, SET("ESRCH", "EPERM"), SET("ptrace"));
	host_healthy();
}

static void test_mount(void **state)
{
	(void)state;
	attack_both("mount", NULL, SET("EPERM"), SET("mount"));
}

static void test_connect(void **state)
{
	(void)state;
	/* A network namespace of its own, with not even loopback up. */
	attack_both("connect", g.port,
		    SET("ENETUNREACH", "EACCES", "EPERM", "socket:EPERM", "socket:EAFNOSUPPORT",
			"socket:EACCES"),
		    SET("socket", "connect"));
	host_healthy();
}

static void test_kill(void **state)
{
	(void)state;
	/* Nobody else in its PID namespace, no host pid visible. */
	attack_both("killall", NULL, SET("ESRCH"), SET("kill"));
	attack_both("killhost", g.victim_s, SET("ESRCH"), SET("kill"));
	host_healthy();
}

/*
 * The test put a key in its own session keyring (main, group_setup), as
 * an agent's token would be in luminaguard's: the jail gives the VMM a
 * fresh session keyring, and its seccomp floor refuses keyctl anyway,
 * also with --seccomp off.
 */
static void test_keyring(void **state)
{
	(void)state;
	attack_both("keyring", KEY_DESC, SET("EPERM", "ENOKEY"), SET("keyctl"));
}

/* vsock is not namespaced: the floor refuses the socket at every level. */
static void test_vsock(void **state)
{
	(void)state;
	attack_both("vsock", NULL, SET("EPERM"), SET("socket"));
}

/* A user namespace would give every capability back, inside it. */
static void test_userns(void **state)
{
	(void)state;
	attack_both("userns", NULL, SET("EPERM"), SET("unshare"));
	/* clone3 fails with ENOSYS (flags BPF cannot see), clone with EPERM. */
	attack_both("userns_mount", NULL, SET("clone:EPERM"), SET("clone", "clone3"));
}

static void test_setuid(void **state)
{
	(void)state;
	attack_both("setuid", NULL, SET("EPERM"), SET("setuid"));
}

static void test_forkbomb(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(levels); i++) {
		struct result r;
		unsigned long forks;
		char *colon;

		run_jailed("forkbomb", NULL, levels[i], &r);
		if (WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGSYS) {
			expect("forkbomb", &r, levels[i], NULL, SET("clone", "clone3", "fork"));
			result_free(&r);
			continue;
		}
		if (!r.have_line)
			fail_msg("forkbomb: no result, status %#x", r.status);
		forks = strtoul(r.outcome, &colon, 10);
		/* The pids limit counts the program itself. */
		if (forks >= PIDS_LIMIT || *colon != ':')
			fail_msg("forkbomb: %s (limit %d)", r.outcome, PIDS_LIMIT);
		assert_string_equal(colon + 1, "EAGAIN");
		result_free(&r);
	}
	host_healthy();
}

static void test_memory(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(levels); i++) {
		struct result r;

		run_jailed("memory", NULL, levels[i], &r);
		if (r.have_line)
			fail_msg("memory: 1 GiB in a %llu MiB jail: %s", MEMORY_LIMIT >> 20,
				 r.outcome);
		assert_true(WIFSIGNALED(r.status));
		assert_int_equal(WTERMSIG(r.status), SIGKILL);
		if (r.explain == NULL || strstr(r.explain, "out of memory") == NULL)
			fail_msg("memory: OOM kill not explained (%s)",
				 r.explain ? r.explain : "NULL");
		result_free(&r);
	}
}

static void test_fsize(void **state)
{
	(void)state;
	attack_both("fsize", NULL, SET("EFBIG:1048576"), NULL);
}

static void test_list_root(void **state)
{
	/* The program's own path starts with this directory. */
	cleanup_free char *top = xstrdup(LG_HOSTILE + 1);

	(void)state;
	top[strcspn(top, "/")] = '\0';
	for (size_t i = 0; i < ARRAY_SIZE(levels); i++) {
		struct result r;
		cleanup_free char *names = NULL;
		char *save = NULL;

		run_jailed("ls", NULL, levels[i], &r);
		if (!WIFEXITED(r.status) || WEXITSTATUS(r.status) != 0 || !r.have_line ||
		    strncmp(r.outcome, "ok:", 3) != 0)
			fail_msg("ls: status %#x, %s", r.status,
				 r.have_line ? r.outcome : "no line");
		names = xstrdup(r.outcome + 3);
		for (char *e = strtok_r(names, ",", &save); e; e = strtok_r(NULL, ",", &save))
			if (strcmp(e, "dev") && strcmp(e, "run") && strcmp(e, top))
				fail_msg("ls: '/%s' is visible in the jail (all: %s)", e,
					 r.outcome + 3);
		result_free(&r);
	}
}

/* The identity it runs under: a per-VM uid and gid, nothing else. */
static void test_identity(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(levels); i++) {
		struct result r;
		unsigned uid, euid, gid, egid, eff, perm, inh, bset;
		int groups, nnp;

		run_jailed("id", NULL, levels[i], &r);
		if (WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGSYS) {
			expect("id", &r, levels[i], NULL,
			       SET("getgroups", "prctl", "capget", "getuid", "getgid"));
			result_free(&r);
			continue;
		}
		if (!r.have_line ||
		    sscanf(r.outcome, "uid=%u,%u gid=%u,%u groups=%d nnp=%d caps=%x,%x,%x,%x", &uid,
			   &euid, &gid, &egid, &groups, &nnp, &eff, &perm, &inh, &bset) != 10)
			fail_msg("id: %s", r.have_line ? r.outcome : "no line");
		assert_true(uid >= UID_FIRST && uid <= UID_LAST);
		assert_int_equal(euid, uid);
		assert_int_equal(gid, uid);
		assert_int_equal(egid, uid);
		assert_int_equal(groups, 0);
		assert_int_equal(nnp, 1);
		assert_int_equal(eff, 0);
		assert_int_equal(perm, 0);
		assert_int_equal(inh, 0);
		assert_int_equal(bset, 0); /* CAP_SYS_ADMIN not even in the bounding set */
		result_free(&r);
	}
}

/*
 * Control runs, without the jail, of attacks that are harmless unjailed:
 * they must work, or the tests above could pass for a broken hostile
 * program.
 */
static void test_control(void **state)
{
	struct result r;
	int c;

	(void)state;
	run("hostfile", g.secret, LG_SECCOMP_OFF, true, &r);
	assert_true(r.have_line);
	assert_string_equal(r.outcome, "ok");
	result_free(&r);

	run("connect", g.port, LG_SECCOMP_OFF, true, &r);
	assert_true(r.have_line);
	assert_string_equal(r.outcome, "ok");
	result_free(&r);
	c = accept4(g.listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	assert_true(c >= 0);
	close(c);

	run("ls", NULL, LG_SECCOMP_OFF, true, &r);
	assert_true(r.have_line);
	assert_non_null(strstr(r.outcome, "etc"));
	result_free(&r);

	run("keyring", KEY_DESC, LG_SECCOMP_OFF, true, &r);
	assert_true(r.have_line);
	assert_string_equal(r.outcome, "ok:" KEY_SECRET);
	result_free(&r);
	host_healthy();
}

/* Runs last: nothing of any jail may be left on the host. */
static void test_nothing_left(void **state)
{
	cleanup_free char *mounts = slurp("/proc/self/mountinfo");
	DIR *proc;
	struct dirent *e;

	(void)state;
	host_healthy();
	for (size_t i = 0; i < g.n_names; i++) {
		cleanup_free char *pat = xasprintf("/sys/fs/cgroup/*/luminaguard/%s", g.names[i]);
		cleanup_free char *v2 = xasprintf("/sys/fs/cgroup/luminaguard/%s", g.names[i]);
		glob_t gl;

		if (glob(pat, 0, NULL, &gl) == 0)
			fail_msg("cgroup left behind: %s", gl.gl_pathv[0]);
		globfree(&gl);
		if (access(v2, F_OK) == 0)
			fail_msg("cgroup left behind: %s", v2);
	}
	for (unsigned uid = UID_FIRST; uid <= UID_LAST; uid++) {
		char p[64];

		snprintf(p, sizeof(p), UID_DIR "/%u", uid);
		if (access(p, F_OK) == 0)
			fail_msg("uid lock file left behind: %s", p);
	}
	/* Line by line: every mount now was there before. */
	for (char *line = mounts, *nl; line && *line; line = nl ? nl + 1 : NULL) {
		nl = strchr(line, '\n');
		if (nl)
			*nl = '\0';
		cleanup_free char *with_nl = xasprintf("%s\n", line);

		if (strstr(g.mounts, with_nl) == NULL)
			fail_msg("a mount appeared on the host: %s", line);
	}
	proc = opendir("/proc");
	assert_non_null(proc);
	while ((e = readdir(proc)) != NULL) {
		cleanup_free char *path = NULL;
		cleanup_free char *status = NULL;
		unsigned ids[4];
		char *uidline;

		if (e->d_name[0] < '1' || e->d_name[0] > '9')
			continue;
		path = xasprintf("/proc/%s/status", e->d_name);
		status = slurp(path);
		if (status == NULL || (uidline = strstr(status, "\nUid:")) == NULL)
			continue;
		if (sscanf(uidline, "\nUid: %u %u %u %u", &ids[0], &ids[1], &ids[2], &ids[3]) != 4)
			continue;
		for (int k = 0; k < 4; k++)
			if (ids[k] >= UID_FIRST && ids[k] <= UID_LAST)
				fail_msg("process %s still runs as per-VM uid %u", e->d_name,
					 ids[k]);
	}
	closedir(proc);
}

static int group_setup(void **state)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);
	int fd;

	(void)state;
	strcpy(g.dir, "/tmp/lg-test-escape-XXXXXX");
	if (mkdtemp(g.dir) == NULL || chmod(g.dir, 0755) < 0)
		return -1;
	g.secret = xasprintf("%s/disk.img", g.dir);
	fd = open(g.secret, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || lg_write_all(fd, SECRET, strlen(SECRET)) < 0)
		return -1;
	close(fd);

	g.listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (g.listen_fd < 0 || bind(g.listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(g.listen_fd, 8) < 0 ||
	    getsockname(g.listen_fd, (struct sockaddr *)&sa, &len) < 0)
		return -1;
	snprintf(g.port, sizeof(g.port), "%u", ntohs(sa.sin_port));

	/* In the session keyring main() joined, which every thread shares. */
	if (syscall(SYS_add_key, "user", KEY_DESC, KEY_SECRET, strlen(KEY_SECRET),
		    KEY_SPEC_SESSION_KEYRING) < 0)
		return -1;

	g.victim = fork();
	if (g.victim < 0)
		return -1;
	if (g.victim == 0) {
		for (;;)
			pause();
	}
	snprintf(g.victim_s, sizeof(g.victim_s), "%ld", (long)g.victim);
	g.mounts = slurp("/proc/self/mountinfo");
	return g.mounts ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	if (g.victim > 0) {
		kill(g.victim, SIGKILL);
		waitpid(g.victim, NULL, 0);
	}
	close(g.listen_fd);
	lg_rm_rf(g.dir);
	free(g.secret);
	free(g.mounts);
	return 0;
}

/* ---- the jailer itself ---- */

static volatile int churn_stop;

static void *nothing(void *arg)
{
	return arg;
}

/* Starts and joins threads as fast as it can: one is always being created. */
static void *churn(void *arg)
{
	(void)arg;
	while (!__atomic_load_n(&churn_stop, __ATOMIC_RELAXED)) {
		pthread_t t;
		if (pthread_create(&t, NULL, nothing, NULL) == 0)
			pthread_join(t, NULL);
	}
	return NULL;
}

/*
 * A VM is spawned from a threaded process (the MCP server, test-vm).  The
 * jailed child is a raw clone of one thread; glibc's setgroups/setresuid
 * wrappers in it waited forever for a thread the parent was creating at
 * that moment (seen in CI: test-vm hung).  Spawn while threads come and go.
 */
static void test_spawn_while_threads_start(void **state)
{
	pthread_t t;

	(void)state;
	__atomic_store_n(&churn_stop, 0, __ATOMIC_RELAXED);
	assert_int_equal(pthread_create(&t, NULL, churn, NULL), 0);
	for (int i = 0; i < 40; i++) {
		struct result r;

		run("shadow", NULL, LG_SECCOMP_OFF, false, &r);
		expect("shadow", &r, LG_SECCOMP_OFF, SET("ENOENT"), NULL);
		result_free(&r);
	}
	__atomic_store_n(&churn_stop, 1, __ATOMIC_RELAXED);
	pthread_join(t, NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_control),	 cmocka_unit_test(test_shadow),
	    cmocka_unit_test(test_host_file),	 cmocka_unit_test(test_proc_environ),
	    cmocka_unit_test(test_exec_shell),	 cmocka_unit_test(test_exec_rundir),
	    cmocka_unit_test(test_ptrace),	 cmocka_unit_test(test_mount),
	    cmocka_unit_test(test_connect),	 cmocka_unit_test(test_kill),
	    cmocka_unit_test(test_setuid),	 cmocka_unit_test(test_keyring),
	    cmocka_unit_test(test_vsock),	 cmocka_unit_test(test_userns),
	    cmocka_unit_test(test_forkbomb),	 cmocka_unit_test(test_memory),
	    cmocka_unit_test(test_fsize),	 cmocka_unit_test(test_list_root),
	    cmocka_unit_test(test_identity),	 cmocka_unit_test(test_spawn_while_threads_start),
	    cmocka_unit_test(test_nothing_left),
	};

	if (geteuid() != 0) {
		fprintf(stderr, "escape tests need root (the jail's per-VM uids, cgroups and "
				"namespaces): skipped\n");
		return 77;
	}
	if (access(LG_HOSTILE, X_OK) != 0) {
		fprintf(stderr, "%s is missing: build the 'hostile' target\n", LG_HOSTILE);
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	/*
	 * A session keyring of this test's own, joined before any thread
	 * starts (threads inherit it; the jail's keeper thread among them),
	 * for test_keyring's secret: the test's caller's keyring is left alone.
	 */
	if (syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, "lg-escape-test") < 0) {
		fprintf(stderr, "keyctl(KEYCTL_JOIN_SESSION_KEYRING): %s\n", strerror(errno));
		return 1;
	}
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
