/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A hostile VMM: started by the jail in place of QEMU, it tries one way
 * out (argv[1]) and reports "RESULT <attack> <outcome>" on fd 3 (or on
 * stdout when fd 3 is not open, for trying it by hand).  The outcome is
 * "ok" when the attack worked, else the errno's name; some attacks add a
 * detail after a colon.  It may also die trying (SIGSYS from seccomp,
 * SIGKILL from the OOM killer): the test reads that from the wait status.
 *
 * Static, libc only: the jail then has no libraries to mount for it.
 *
 * Usage: hostile ATTACK [ARG]
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <linux/keyctl.h>
#include <linux/sched.h>
#include <linux/vm_sockets.h>
#include <sched.h>
#include <sys/wait.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define RUN_DIR "/run/vm" /* JAIL_RUN_DIR */

static const char *attack;

static const char *errname(int e)
{
	static char buf[16];
	const char *n = strerrorname_np(e);

	if (n != NULL)
		return n;
	snprintf(buf, sizeof(buf), "E%d", e);
	return buf;
}

static void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void report(const char *fmt, ...)
{
	char line[1024];
	int n = snprintf(line, sizeof(line), "RESULT %s ", attack);
	va_list ap;
	int fd = fcntl(3, F_GETFD) >= 0 ? 3 : 1;

	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	if (write(fd, line, (size_t)n) < 0) {
		/* nobody to tell */
	}
}

/* "ok" for r >= 0, else the errno's name. */
static void outcome(int r)
{
	report("%s", r >= 0 ? "ok" : errname(errno));
}

static int open_read(const char *path)
{
	char buf[64];
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	/* Opening is not enough to count: the content must come out. */
	if (read(fd, buf, sizeof(buf)) < 0) {
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

static int pid_arg(const char *s)
{
	return s ? atoi(s) : 0;
}

static void do_exec_rundir(const char *self)
{
	/* A script in the writable dir whose interpreter reports success. */
	char script[512];
	int fd, n;

	n = snprintf(script, sizeof(script), "#!%s pwned\n", self);
	fd = open(RUN_DIR "/x", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
	if (fd < 0) {
		report("open:%s", errname(errno));
		return;
	}
	if (write(fd, script, (size_t)n) != n) {
		report("write:%s", errname(errno));
		close(fd);
		return;
	}
	close(fd);
	char *const argv[] = {RUN_DIR "/x", NULL};
	char *const envp[] = {NULL};
	execve(RUN_DIR "/x", argv, envp);
	report("%s", errname(errno));
}

static void do_forkbomb(void)
{
	int ok = 0, err = 0;

	for (int i = 0; i < 10000; i++) {
		pid_t pid = fork();

		if (pid == 0) {
			for (;;)
				pause();
		}
		if (pid < 0) {
			err = errno;
			break;
		}
		ok++;
	}
	report("%d:%s", ok, err ? errname(err) : "none");
	/* As pid 1 of the jail's PID namespace, our exit takes the children along. */
}

static void do_memory(void)
{
	/* 1 GiB in 1 MiB steps, every page touched. */
	size_t total = 0;

	for (int i = 0; i < 1024; i++) {
		char *p = malloc(1 << 20);

		if (p == NULL) {
			report("ENOMEM:%zu", total);
			return;
		}
		memset(p, 0x5a, 1 << 20);
		total += 1 << 20;
	}
	report("ok:%zu", total);
}

static void do_fsize(void)
{
	static char chunk[64 * 1024];
	size_t total = 0;
	int fd;

	/* Without this, SIGXFSZ would kill us before we could report. */
	signal(SIGXFSZ, SIG_IGN);
	fd = open(RUN_DIR "/big", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		report("open:%s", errname(errno));
		return;
	}
	memset(chunk, 'x', sizeof(chunk));
	for (int i = 0; i < 64; i++) { /* 4 MiB */
		ssize_t w = write(fd, chunk, sizeof(chunk));

		if (w < 0) {
			report("%s:%zu", errname(errno), total);
			close(fd);
			return;
		}
		total += (size_t)w;
	}
	close(fd);
	report("ok:%zu", total);
}

static void do_connect(const char *port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_port = htons((uint16_t)atoi(port ? port : "0"))};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		report("socket:%s", errname(errno));
		return;
	}
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	outcome(connect(fd, (struct sockaddr *)&sa, sizeof(sa)));
	close(fd);
}

static void do_ls(void)
{
	char names[900] = "";
	DIR *d = opendir("/");
	struct dirent *e;

	if (d == NULL) {
		report("%s", errname(errno));
		return;
	}
	while ((e = readdir(d)) != NULL) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (strlen(names) + strlen(e->d_name) + 2 >= sizeof(names))
			break;
		if (names[0])
			strcat(names, ",");
		strcat(names, e->d_name);
	}
	closedir(d);
	report("ok:%s", names);
}

/* Who the jail made us: ids, groups, no_new_privs, capabilities. */
static void do_id(void)
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct d[2] = {{0}};
	gid_t groups[64];
	int ng = getgroups(64, groups);
	int nnp = prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0);

	if (syscall(SYS_capget, &h, d) < 0) {
		report("capget:%s", errname(errno));
		return;
	}
	report("uid=%u,%u gid=%u,%u groups=%d nnp=%d caps=%x,%x,%x,%x", (unsigned)getuid(),
	       (unsigned)geteuid(), (unsigned)getgid(), (unsigned)getegid(), ng, nnp,
	       d[0].effective | d[1].effective, d[0].permitted | d[1].permitted,
	       d[0].inheritable | d[1].inheritable,
	       (unsigned)prctl(PR_CAPBSET_READ, CAP_SYS_ADMIN, 0, 0, 0));
}

/*
 * The secret the test put in its own session keyring: found by type and
 * description (an attacker does not need the serial), then read.
 */
static void do_keyring(const char *desc)
{
	char buf[256];
	long id = syscall(SYS_keyctl, KEYCTL_SEARCH, KEY_SPEC_SESSION_KEYRING, "user",
			  desc ? desc : "lg-escape-secret", 0);
	long n;

	if (id < 0) {
		report("%s", errname(errno));
		return;
	}
	n = syscall(SYS_keyctl, KEYCTL_READ, id, buf, sizeof(buf) - 1);
	if (n < 0) {
		report("read:%s", errname(errno));
		return;
	}
	buf[n < (long)sizeof(buf) ? n : (long)sizeof(buf) - 1] = '\0';
	report("ok:%s", buf);
}

/* vsock is not namespaced: a socket would reach the host's vsock services (CID 2). */
static void do_vsock(void)
{
	struct sockaddr_vm sa = {
	    .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_HOST, .svm_port = 9999};
	int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		report("%s", errname(errno));
		return;
	}
	/* The socket is the escape; where it connects does not matter. */
	(void)connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	close(fd);
	report("ok");
}

/*
 * A user namespace and a mount namespace of its own, and a mount in them:
 * every capability again, inside.  clone3 first (its flags are in memory,
 * where seccomp cannot look), then clone.  The child mounts and exits with
 * 0 or the errno.
 */
static void do_userns_mount(void)
{
	struct clone_args ca = {.flags = CLONE_NEWUSER | CLONE_NEWNS, .exit_signal = SIGCHLD};
	const char *how = "clone3";
	long pid = syscall(SYS_clone3, &ca, sizeof(ca));
	int st;

	if (pid < 0) {
		how = "clone";
		pid =
		    syscall(SYS_clone, CLONE_NEWUSER | CLONE_NEWNS | SIGCHLD, NULL, NULL, NULL, 0);
	}
	if (pid < 0) {
		report("%s:%s", how, errname(errno));
		return;
	}
	if (pid == 0)
		_exit(mount("tmpfs", RUN_DIR, "tmpfs", 0, "size=1m") == 0 ? 0 : errno);
	if (waitpid((pid_t)pid, &st, 0) < 0) {
		report("waitpid:%s", errname(errno));
		return;
	}
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		report("ok");
	else if (WIFEXITED(st))
		report("mount:%s", errname(WEXITSTATUS(st)));
	else
		report("child-signal:%d", WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

int main(int argc, char **argv)
{
	const char *arg = argc > 2 ? argv[2] : NULL;

	if (argc < 2) {
		fprintf(stderr, "usage: hostile ATTACK [ARG]\n");
		return 2;
	}
	attack = argv[1];
	if (!strcmp(attack, "shadow")) {
		outcome(open_read("/etc/shadow"));
	} else if (!strcmp(attack, "hostfile")) {
		outcome(open_read(arg ? arg : "/"));
	} else if (!strcmp(attack, "environ")) {
		outcome(open_read("/proc/1/environ"));
	} else if (!strcmp(attack, "exec")) {
		char *const sh_argv[] = {"sh", "-c", "echo RESULT exec ok >&3", NULL};
		char *const envp[] = {NULL};

		execve("/bin/sh", sh_argv, envp);
		outcome(-1);
	} else if (!strcmp(attack, "exec_rundir")) {
		do_exec_rundir(argv[0]);
	} else if (!strcmp(attack, "pwned")) {
		/* The interpreter of exec_rundir's script: the exec worked. */
		attack = "exec_rundir";
		report("ok");
	} else if (!strcmp(attack, "ptrace1")) {
		outcome((int)ptrace(PTRACE_ATTACH, 1, NULL, NULL));
	} else if (!strcmp(attack, "ptrace_host")) {
		outcome((int)ptrace(PTRACE_ATTACH, pid_arg(arg), NULL, NULL));
	} else if (!strcmp(attack, "mount")) {
		outcome(mount("tmpfs", RUN_DIR, "tmpfs", 0, "size=1m"));
	} else if (!strcmp(attack, "connect")) {
		do_connect(arg);
	} else if (!strcmp(attack, "killall")) {
		outcome(kill(-1, SIGKILL));
	} else if (!strcmp(attack, "killhost")) {
		outcome(kill(pid_arg(arg), SIGKILL));
	} else if (!strcmp(attack, "forkbomb")) {
		do_forkbomb();
	} else if (!strcmp(attack, "memory")) {
		do_memory();
	} else if (!strcmp(attack, "fsize")) {
		do_fsize();
	} else if (!strcmp(attack, "setuid")) {
		outcome(setuid(0));
	} else if (!strcmp(attack, "id")) {
		do_id();
	} else if (!strcmp(attack, "ls")) {
		do_ls();
	} else if (!strcmp(attack, "keyring")) {
		do_keyring(arg);
	} else if (!strcmp(attack, "vsock")) {
		do_vsock();
	} else if (!strcmp(attack, "userns")) {
		outcome(unshare(CLONE_NEWUSER));
	} else if (!strcmp(attack, "userns_mount")) {
		do_userns_mount();
	} else {
		report("unknown-attack");
		return 2;
	}
	return 0;
}
