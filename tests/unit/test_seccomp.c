/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the seccomp profiles with real seccomp: forked children
 * install the compiled QEMU profile and make allowed and forbidden calls;
 * the kernel's audit records (/dev/kmsg) must name the syscall, and
 * hostile text in /dev/kmsg must not fool the parser.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "common/util.h"
#include "jail/seccomp.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif

/*
 * The profile the children run under.  In a sanitizer build (build-asan)
 * the children run the sanitizer runtime after the install, which makes
 * calls QEMU does not (an alternate signal stack for its SEGV handler);
 * those, and only those, are added.  QEMU itself is never run under a
 * sanitizer, so the real profile does not need them.
 */
static const struct lg_sc_profile *test_profile(void)
{
#ifdef SANITIZED
	static const struct lg_sc_rule extra[] = {
	    {.name = "sigaltstack", .arg = -1},
	};
	static struct lg_sc_rule rules[256];
	static struct lg_sc_profile p;

	if (p.rules == NULL) {
		size_t n = lg_sc_profile_qemu.n_rules;

		assert_true(n + ARRAY_SIZE(extra) <= ARRAY_SIZE(rules));
		memcpy(rules, lg_sc_profile_qemu.rules, n * sizeof(rules[0]));
		memcpy(rules + n, extra, sizeof(extra));
		p = (struct lg_sc_profile){
		    .vmm_kind = "qemu+sanitizer", .rules = rules, .n_rules = n + ARRAY_SIZE(extra)};
	}
	return &p;
#else
	return &lg_sc_profile_qemu;
#endif
}

static struct sock_fprog compile_level(enum lg_seccomp_level level)
{
	struct sock_fprog prog;
	struct lg_err *err = NULL;

	if (lg_seccomp_compile(test_profile(), level, &prog, &err) < 0) {
		fprintf(stderr, "compile: %s\n", err->msg);
		fail();
	}
	return prog;
}

/*
 * A forked child must die of the signal its fault raises.  It inherits
 * cmocka's handlers for SIGSEGV, SIGILL, SIGSYS..., which longjmp back
 * into the test runner: the child would then run the rest of the suite
 * as a second copy, and its parent would see an exit status instead of
 * the signal.
 */
static void child_default_signals(void)
{
	sigset_t none;

	for (int sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

/* Runs fn in a child under the profile at `level`; returns its wait status. */
static int run_child(enum lg_seccomp_level level, const char *comm, void (*fn)(void))
{
	struct sock_fprog prog = compile_level(level);
	int status;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		child_default_signals();
		if (comm != NULL)
			prctl(PR_SET_NAME, comm);
		if (lg_seccomp_install(&prog) < 0)
			_exit(99);
		fn();
		_exit(0);
	}
	lg_seccomp_prog_free(&prog);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return status;
}

static void assert_sigsys(int status)
{
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGSYS) {
		fprintf(stderr, "child status %#x: %s %d, expected SIGSYS\n", status,
			WIFSIGNALED(status) ? "signal" : "exit",
			WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
		fail();
	}
}

static void assert_exit0(int status)
{
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "child status %#x: %s %d, expected exit 0\n", status,
			WIFSIGNALED(status) ? "signal" : "exit",
			WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
		fail();
	}
}

/* ---- children ---------------------------------------------------------- */

static void *thread_fn(void *arg)
{
	return arg;
}

/* What QEMU does all day: memory, a thread, pipes, polls, clocks. */
static void do_allowed(void)
{
	uint64_t one = 1, got = 0;
	int efd;
	char c = 'x';
	pthread_t t;
	void *m, *r = NULL;
	struct timespec ts;

	efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (efd < 0 || write(efd, &one, 8) != 8 || read(efd, &got, 8) != 8 || got != 1)
		_exit(2);
	m = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED || mprotect(m, 4096, PROT_READ) < 0 || munmap(m, 1 << 20) < 0)
		_exit(3);
	/* glibc tries clone3 (ENOSYS here), then clone with CLONE_THREAD. */
	if (pthread_create(&t, NULL, thread_fn, (void *)&c) != 0 || pthread_join(t, &r) != 0 ||
	    r != &c)
		_exit(4);
	if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0 || syscall(SYS_clock_gettime, 1, &ts) < 0)
		_exit(5);
	/* isatty() on an eventfd: TCGETS is allowed and fails with ENOTTY. */
	if (isatty(efd) || errno != ENOTTY)
		_exit(6);
	if (prctl(PR_SET_TIMERSLACK, 1) < 0)
		_exit(7);
	if (syscall(SYS_getpid) != getpid())
		_exit(8);
}

/* Calls that fail softly instead of killing. */
static void do_errno(void)
{
	if (syscall(SYS_clone3, NULL, 0) != -1 || errno != ENOSYS)
		_exit(2);
	if (syscall(SYS_io_uring_setup, 8, NULL) != -1 || errno != ENOSYS)
		_exit(3);
}

static void do_ptrace(void)
{
	ptrace(PTRACE_TRACEME, 0, NULL, NULL);
}
static void do_mount(void)
{
	mount("none", "/mnt", "tmpfs", 0, NULL);
}
static void do_socket_inet(void)
{
	socket(AF_INET, SOCK_STREAM, 0);
}
static void do_socket_unix(void)
{
	socket(AF_UNIX, SOCK_STREAM, 0);
}
static void do_fork(void)
{
	/* glibc's fork() is clone(SIGCHLD | CLONE_CHILD_*): no CLONE_THREAD. */
	pid_t p = fork();

	if (p == 0)
		_exit(0);
}
static void do_vfork_flags(void)
{
	syscall(SYS_clone, CLONE_VM | CLONE_VFORK | SIGCHLD, NULL, NULL, NULL, 0);
}
static void do_tiocsti(void)
{
	char c = 'x';

	ioctl(0, TIOCSTI, &c);
}
static void do_prctl_other(void)
{
	prctl(PR_SET_DUMPABLE, 1);
}
static void do_execveat(void)
{
	syscall(SYS_execveat, -1, "", NULL, NULL, 0);
}
static void do_x32(void)
{
	syscall(0x40000000 | SYS_getpid); /* __X32_SYSCALL_BIT */
}
/* getpid through the i386 ABI (a different syscall table): its result. */
static long int80_getpid(void)
{
	long ret;

	__asm__ volatile("int $0x80" : "=a"(ret) : "a"(20L) : "memory");
	return ret;
}
static void do_int80(void)
{
	(void)int80_getpid();
}

static void do_unlisted_log(void)
{
	syscall(SYS_getppid);
	syscall(SYS_getuid);
	syscall(SYS_getppid);
}

/* ---- tests ----------------------------------------------------------- */

static void test_find_and_levels(void **state)
{
	struct sock_fprog prog;
	struct lg_err *err = NULL;

	assert_ptr_equal(lg_sc_profile_find("qemu"), &lg_sc_profile_qemu);
	assert_null(lg_sc_profile_find("none"));
	assert_null(lg_sc_profile_find(NULL));

	assert_int_equal(lg_seccomp_compile(&lg_sc_profile_qemu, LG_SECCOMP_OFF, &prog, &err), 0);
	assert_int_equal(prog.len, 0);
	assert_null(prog.filter);
	assert_int_equal(lg_seccomp_install(&prog), 0);

	prog = compile_level(LG_SECCOMP_STRICT);
	assert_true(prog.len > 10 && prog.len <= BPF_MAXINSNS);
	/* The first instructions check the architecture. */
	assert_int_equal(prog.filter[0].code, BPF_LD | BPF_W | BPF_ABS);
	assert_int_equal(prog.filter[0].k, offsetof(struct seccomp_data, arch));
	lg_seccomp_prog_free(&prog);
	assert_null(prog.filter);

	prog = compile_level(LG_SECCOMP_LOG);
	assert_true(prog.len > 10);
	lg_seccomp_prog_free(&prog);
}

static void test_unknown_syscall_is_an_error(void **state)
{
	static const struct lg_sc_rule rules[] = {{.name = "read", .arg = -1},
						  {.name = "no_such_syscall", .arg = -1}};
	static const struct lg_sc_profile p = {.vmm_kind = "bad", .rules = rules, .n_rules = 2};
	struct sock_fprog prog;
	struct lg_err *err = NULL;

	assert_true(lg_seccomp_compile(&p, LG_SECCOMP_STRICT, &prog, &err) < 0);
	assert_non_null(strstr(err->msg, "no_such_syscall"));
	assert_null(prog.filter);
	lg_err_free(&err);
}

static void test_allowed_survives(void **state)
{
	assert_exit0(run_child(LG_SECCOMP_STRICT, NULL, do_allowed));
	assert_exit0(run_child(LG_SECCOMP_STRICT, NULL, do_errno));
}

static void test_forbidden_killed(void **state)
{
	static void (*const fns[])(void) = {
	    do_ptrace,	    do_mount,	do_socket_inet, do_socket_unix, do_fork,
	    do_vfork_flags, do_tiocsti, do_prctl_other, do_execveat,	do_x32,
	};

	for (size_t i = 0; i < ARRAY_SIZE(fns); i++) {
		fprintf(stderr, "forbidden call #%zu\n", i);
		assert_sigsys(run_child(LG_SECCOMP_STRICT, NULL, fns[i]));
	}
}

/*
 * Does `int $0x80` reach the kernel's i386 syscall table here?  Asked in a
 * child without any filter, which dies of the default action of whatever
 * it raises.  A kernel built without IA32 emulation (or booted with
 * ia32_emulation=0) answers int $0x80 with SIGSEGV before any syscall
 * entry, so seccomp never sees it: there is then no other ABI to get
 * around the filter with, and nothing to test.  NULL: the ABI works; else
 * why the test skips.  Anything else the child does is a failure.
 */
static const char *ia32_missing(void)
{
	int status;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		child_default_signals();
		_exit(int80_getpid() == (long)getpid() ? 0 : 3);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return NULL;
	if (WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV)
		return "int $0x80 raises SIGSEGV without any filter: this kernel has no IA32 "
		       "emulation, so there is no 32-bit ABI to get around the filter with";
	fprintf(stderr,
		"int $0x80 without a filter: status %#x (%s %d), expected exit 0 or "
		"SIGSEGV\n",
		status, WIFSIGNALED(status) ? "signal" : "exit",
		WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
	fail();
	return NULL;
}

static void test_other_abi_killed(void **state)
{
	const char *why = ia32_missing();

	if (why != NULL) {
		fprintf(stderr, "skipped: %s\n", why);
		skip();
		return;
	}
	/*
	 * The ABI works unfiltered, so under the filter the only way for
	 * the child not to die by SIGSYS is the filter letting it through.
	 * At level log too: another ABI is never merely logged.
	 */
	assert_sigsys(run_child(LG_SECCOMP_STRICT, NULL, do_int80));
	assert_sigsys(run_child(LG_SECCOMP_LOG, NULL, do_int80));
}

/*
 * The jail's floor, alone (as under --seccomp off): what no VMM needs
 * fails with EPERM (ENOSYS for clone3), everything else works.
 */
static void do_floor(void)
{
	int fd;

	/* A vsock socket, also with junk in the upper half of the int argument. */
	if (syscall(SYS_socket, AF_VSOCK, SOCK_STREAM, 0) != -1 || errno != EPERM)
		_exit(2);
	if (syscall(SYS_socket, (1UL << 32) | AF_VSOCK, SOCK_STREAM, 0) != -1 || errno != EPERM)
		_exit(3);
	if (unshare(CLONE_NEWUSER) != -1 || errno != EPERM)
		_exit(4);
	if (syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, NULL, NULL, NULL, 0) != -1 ||
	    errno != EPERM)
		_exit(5);
	if (syscall(SYS_clone3, NULL, 0) != -1 || errno != ENOSYS)
		_exit(6);
	if (mount("none", "/mnt", "tmpfs", 0, NULL) != -1 || errno != EPERM)
		_exit(7);
	if (syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session */, 0) != -1 ||
	    errno != EPERM)
		_exit(8);
	if (syscall(SYS_add_key, "user", "x", "y", 1, -3) != -1 || errno != EPERM)
		_exit(9);
	/* Not in the floor: other sockets, threads, a plain fork. */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		_exit(10);
	close(fd);
	do_allowed();
	do_fork();
}

static void test_floor(void **state)
{
	struct sock_fprog prog;
	struct lg_err *err = NULL;
	int status;
	pid_t pid;

	if (lg_seccomp_compile_floor(&prog, &err) < 0) {
		fprintf(stderr, "compile the floor: %s\n", err->msg);
		fail();
	}
	assert_true(prog.len > 10);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		child_default_signals();
		if (lg_seccomp_install(&prog) < 0)
			_exit(99);
		do_floor();
		_exit(0);
	}
	lg_seccomp_prog_free(&prog);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_exit0(status);
}

static void test_off_allows_everything(void **state)
{
	assert_exit0(run_child(LG_SECCOMP_OFF, NULL, do_unlisted_log));
}

static struct lg_seccomp_watch *open_watch_or_skip(void)
{
	struct lg_seccomp_watch *w = lg_seccomp_watch_open();

	if (w == NULL)
		fprintf(stderr, "cannot read /dev/kmsg (%s): skipping\n", strerror(errno));
	return w;
}

/*
 * kauditd prints through printk_ratelimit() (10 per 5 s): after a burst of
 * kills a record can be dropped.  The watch tests run first; if a record
 * is missing anyway, wait for the limit to refill and try once more.
 */
static char *killer_of(enum lg_seccomp_level level, const char *comm, void (*fn)(void),
		       bool with_fake, int *status)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		struct lg_seccomp_watch *w = open_watch_or_skip();
		struct sock_fprog prog = compile_level(level);
		int gate[2];
		char c = 0;
		char *name;
		pid_t pid;

		if (w == NULL)
			return NULL;
		assert_int_equal(pipe2(gate, O_CLOEXEC), 0);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			child_default_signals();
			close(gate[1]);
			prctl(PR_SET_NAME, comm);
			if (read(gate[0], &c, 1) != 1 || lg_seccomp_install(&prog) < 0)
				_exit(99);
			fn();
			_exit(0);
		}
		lg_seccomp_prog_free(&prog);
		close(gate[0]);
		if (with_fake) {
			/*
			 * Root writes a forged record naming the child: it lands
			 * with facility LOG_USER and must be ignored.
			 */
			char *fake = xasprintf(
			    "<5>audit: type=1326 audit(1795372243.879:2): auid=0 uid=0 gid=0 "
			    "ses=1 pid=%d comm=\"x\" exe=\"/x\" sig=31 arch=c000003e syscall=169 "
			    "compat=0 ip=0x0 code=0x80000000\n",
			    (int)pid);
			int kfd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);

			assert_true(kfd >= 0);
			assert_int_equal(write(kfd, fake, strlen(fake)), (ssize_t)strlen(fake));
			close(kfd);
			free(fake);
		}
		assert_int_equal(write(gate[1], "g", 1), 1);
		close(gate[1]);
		assert_int_equal(waitpid(pid, status, 0), pid);
		name = lg_seccomp_watch_killer(w, pid);
		lg_seccomp_watch_close(w);
		if (name != NULL || attempt == 1 || !WIFSIGNALED(*status))
			return name;
		fprintf(stderr, "no audit record (rate limit?): retrying in 6 s\n");
		sleep(6);
	}
	return NULL;
}

static void test_watch_killer(void **state)
{
	struct lg_seccomp_watch *w = open_watch_or_skip();
	int status;
	char *name;

	if (w == NULL) {
		skip();
		return;
	}
	lg_seccomp_watch_close(w);
	name = killer_of(LG_SECCOMP_STRICT, "lg-sc-test", do_ptrace, false, &status);
	assert_sigsys(status);
	assert_non_null(name);
	assert_string_equal(name, "ptrace");
	free(name);
}

/*
 * The child's own name tries to inject fields, and root forges a whole
 * record for it with another syscall: the name must still be ptrace's.
 */
static void test_watch_hostile(void **state)
{
	struct lg_seccomp_watch *w = open_watch_or_skip();
	int status;
	char *name;

	if (w == NULL) {
		skip();
		return;
	}
	lg_seccomp_watch_close(w);
	name = killer_of(LG_SECCOMP_STRICT, "pid=1 syscall=101", do_ptrace, true, &status);
	assert_sigsys(status);
	assert_non_null(name);
	assert_string_equal(name, "ptrace");
	free(name);
}

static void test_watch_logged(void **state)
{
	struct lg_seccomp_watch *w = open_watch_or_skip();
	char *names;
	pid_t pid;
	int status;

	if (w == NULL) {
		skip();
		return;
	}
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct sock_fprog prog;

		child_default_signals();
		/* Compiled before the fork in real use; fine in a test child. */
		if (lg_seccomp_compile(test_profile(), LG_SECCOMP_LOG, &prog, NULL) < 0 ||
		    lg_seccomp_install(&prog) < 0)
			_exit(99);
		do_unlisted_log();
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_exit0(status);
	names = lg_seccomp_watch_logged(w, pid);
	/* Nothing is killed, and no kill is made up. */
	assert_null(lg_seccomp_watch_killer(w, pid));
	lg_seccomp_watch_close(w);
	assert_non_null(names);
	assert_string_equal(names, "getppid, getuid");
	free(names);
}

/* ---- the parser on hand-written records ------------------------------- */

#define TAIL "sig=31 arch=c000003e syscall=101 compat=0 ip=0x7f50e321834a code=0x80000000"
#define HEAD "5,2291,10176899796,-;audit: type=1326 audit(1795372243.879:2): "

static int parse(const char *s, struct lg_sc_record *r)
{
	memset(r, 0, sizeof(*r));
	return lg_seccomp_record_parse(s, strlen(s), r);
}

static void test_parse_records(void **state)
{
	struct lg_sc_record r;

	/* The record from the issue, verbatim. */
	assert_int_equal(parse(HEAD "auid=4294967295 uid=0 gid=0 ses=4294967295 pid=23570 "
				    "comm=\"sct\" exe=\"/tmp/sct\" " TAIL "\n",
			       &r),
			 0);
	assert_int_equal(r.pid, 23570);
	assert_int_equal(r.arch, AUDIT_ARCH_X86_64);
	assert_int_equal(r.nr, 101);
	assert_int_equal(r.action, SECCOMP_RET_KILL_PROCESS);

	/* With an LSM label, a caller id in the header, a log action. */
	assert_int_equal(parse("5,7,8,-,caller=T30;audit: type=1326 audit(1.2:3): auid=1 uid=0 "
			       "gid=0 ses=2 subj=unconfined pid=42 comm=6120622063 exe=\"/x\" "
			       "sig=0 arch=40000003 syscall=20 compat=1 ip=0x1 code=0x7ffc0000",
			       &r),
			 0);
	assert_int_equal(r.pid, 42);
	assert_int_equal(r.arch, AUDIT_ARCH_I386);
	assert_int_equal(r.nr, 20);
	assert_int_equal(r.action, SECCOMP_RET_LOG);

	/*
	 * Unescaped hostile names (as if a kernel stopped hex-encoding them):
	 * a comm that carries pid= and syscall=, an exe that carries a whole
	 * tail.  The real fields win.
	 */
	assert_int_equal(parse(HEAD "auid=0 uid=0 gid=0 ses=1 pid=77 comm=\"x pid=1 syscall=2\" "
				    "exe=\"/a sig=31 arch=c000003e syscall=2 compat=0 ip=0x0 "
				    "code=0x80000000 b\" " TAIL,
			       &r),
			 0);
	assert_int_equal(r.pid, 77);
	assert_int_equal(r.nr, 101);

	/* Forged by userspace: facility LOG_USER (13 = user.notice). */
	assert_int_equal(parse("13,5,6,-;audit: type=1326 audit(1.2:3): auid=0 uid=0 gid=0 ses=1 "
			       "pid=77 comm=\"x\" exe=\"/x\" " TAIL,
			       &r),
			 -EINVAL);
	/* pid only after comm= (comm is where a process writes): refused. */
	assert_int_equal(
	    parse(HEAD "auid=0 uid=0 gid=0 ses=1 comm=\"x\" pid=1 exe=\"/x\" " TAIL, &r), -EINVAL);
	/* Two pids before comm: something is off, refuse. */
	assert_int_equal(
	    parse(HEAD "auid=0 pid=3 uid=0 gid=0 ses=1 pid=1 comm=\"x\" exe=\"/x\" " TAIL, &r),
	    -EINVAL);
	/* A tail that does not end the record (fields appended after it). */
	assert_int_equal(
	    parse(HEAD "auid=0 uid=0 gid=0 ses=1 pid=1 comm=\"x\" exe=\"/x\" " TAIL " extra=1", &r),
	    -EINVAL);
	/* Missing tail fields, wrong type, other messages, junk numbers. */
	assert_int_equal(parse(HEAD "auid=0 pid=1 comm=\"x\" exe=\"/x\" sig=31 arch=c000003e "
				    "syscall=101 compat=0 code=0x80000000",
			       &r),
			 -EINVAL);
	assert_int_equal(parse("5,1,2,-;audit: type=1400 audit(1.2:3): auid=0 pid=1 comm=\"x\" "
			       "exe=\"/x\" " TAIL,
			       &r),
			 -EINVAL);
	assert_int_equal(parse("5,1,2,-;usb 1-1: new device", &r), -EINVAL);
	assert_int_equal(parse(HEAD "auid=0 pid=12x comm=\"x\" exe=\"/x\" " TAIL, &r), -EINVAL);
	assert_int_equal(parse(HEAD "auid=0 pid=-1 comm=\"x\" exe=\"/x\" " TAIL, &r), -EINVAL);
	assert_int_equal(parse(HEAD "auid=0 pid=1 comm=\"x\" exe=\"/x\" sig=31 arch=zz syscall=1 "
				    "compat=0 ip=0x0 code=0x80000000",
			       &r),
			 -EINVAL);
	assert_int_equal(parse(HEAD "auid=0 pid=1 comm=\"x\"  exe=\"/x\" " TAIL, &r), -EINVAL);
	assert_int_equal(parse("no header at all", &r), -EINVAL);
	assert_int_equal(parse("", &r), -EINVAL);
	/* Not NUL-terminated: the parser must stay inside len. */
	{
		const char *s = HEAD "auid=0 pid=5 comm=\"x\" exe=\"/x\" " TAIL;
		char *copy = xmalloc(strlen(s));

		memcpy(copy, s, strlen(s));
		assert_int_equal(lg_seccomp_record_parse(copy, strlen(s), &r), 0);
		assert_int_equal(r.pid, 5);
		/* Cut inside the last field: "code=" with no value. */
		assert_int_equal(
		    lg_seccomp_record_parse(copy, strlen(s) - strlen("0x80000000"), &r), -EINVAL);
		free(copy);
	}
}

/* ---- timing ------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * Compile and install, median of 100 each.  The bounds are generous (a
 * slow CI machine passes); the numbers go to docs/seccomp.md.
 */
static void test_timing(void **state)
{
	enum { N = 100 };
	uint64_t compile_ns[N], install_ns[N];
	struct sock_fprog prog = compile_level(LG_SECCOMP_STRICT);
	unsigned len = prog.len;

	for (int i = 0; i < N; i++) {
		struct sock_fprog p;
		uint64_t t0 = lg_now_ns();

		assert_int_equal(
		    lg_seccomp_compile(&lg_sc_profile_qemu, LG_SECCOMP_STRICT, &p, NULL), 0);
		compile_ns[i] = lg_now_ns() - t0;
		lg_seccomp_prog_free(&p);
	}
	for (int i = 0; i < N; i++) {
		int pfd[2], status;
		pid_t pid;

		assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			uint64_t t0 = lg_now_ns(), dt;

			if (lg_seccomp_install(&prog) < 0)
				_exit(99);
			dt = lg_now_ns() - t0;
			_exit(write(pfd[1], &dt, sizeof(dt)) == sizeof(dt) ? 0 : 2);
		}
		close(pfd[1]);
		assert_int_equal(read(pfd[0], &install_ns[i], sizeof(install_ns[i])),
				 sizeof(install_ns[i]));
		close(pfd[0]);
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_exit0(status);
	}
	lg_seccomp_prog_free(&prog);
	qsort(compile_ns, N, sizeof(compile_ns[0]), cmp_u64);
	qsort(install_ns, N, sizeof(install_ns[0]), cmp_u64);
	fprintf(stderr,
		"seccomp timing: compile median %.1f us (min %.1f), install median %.1f us "
		"(min %.1f), program %u instructions\n",
		compile_ns[N / 2] / 1e3, compile_ns[0] / 1e3, install_ns[N / 2] / 1e3,
		install_ns[0] / 1e3, len);
	assert_true(compile_ns[N / 2] < 200 * 1000 * 1000ULL);
	assert_true(install_ns[N / 2] < 10 * 1000 * 1000ULL);
}

int main(void)
{
	/* The watch tests first: kauditd's printk rate limit is fresh then. */
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_watch_killer),
	    cmocka_unit_test(test_watch_hostile),
	    cmocka_unit_test(test_watch_logged),
	    cmocka_unit_test(test_parse_records),
	    cmocka_unit_test(test_find_and_levels),
	    cmocka_unit_test(test_unknown_syscall_is_an_error),
	    cmocka_unit_test(test_allowed_survives),
	    cmocka_unit_test(test_forbidden_killed),
	    cmocka_unit_test(test_other_abi_killed),
	    cmocka_unit_test(test_off_allows_everything),
	    cmocka_unit_test(test_floor),
	    cmocka_unit_test(test_timing),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
