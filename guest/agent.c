/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The protocol server of lg-agent: one poll() loop over the host port, a
 * signalfd for SIGCHLD, and the pipes of every running exec.
 *
 * Nothing here blocks on the port.  The host may be writing STDIN to us
 * while we write STDOUT to it; if both sides blocked on write, both would
 * wait forever.  So every outgoing frame goes into one queue (a->out) that
 * is flushed when the port is writable, and memory stays bounded by
 * backpressure instead:
 *
 *   - above OUT_HIGH queued bytes we stop reading the children's pipes (the
 *     children then block on write, which is what a slow reader should do);
 *   - above OUT_HARD we stop taking frames from the port (the host then
 *     blocks or queues on its side);
 *   - stdin is bounded by credit, not by stalling the port: the host may
 *     have at most LG_STDIN_WINDOW bytes of an exec's STDIN un-ACKed, we
 *     buffer what the child's pipe does not take yet and send STDIN_ACK as
 *     it takes it.  A command that never reads its stdin therefore holds
 *     up only its own stdin, never a KILL or another exec's frames.
 *
 * docs/agent-protocol.md describes the protocol and the choices made here.
 */
#include "guest/agent.h"
#include "guest/request.h"
#include "guest/user.h"

#include "common/err.h"
#include "common/util.h"
#include "proto/proto.h"
#include "lg-config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <linux/random.h>
#include <sys/ioctl.h>
#include <time.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_EXECS 64

#define OUT_HIGH (1u << 20) /* stop reading children's output above this */
#define OUT_HARD (4u << 20) /* stop taking requests above this */
/* Batch STDIN_ACKs up to this much while the child still has stdin queued. */
#define STDIN_ACK_BATCH (LG_STDIN_WINDOW / 4)

/* A FILE_READ result must fit one frame next to its other fields. */
#define READ_MAX (LG_FRAME_MAX_PAYLOAD - 1024)
/* Room kept free in a LIST_DIR result for ERRNO and MESSAGE. */
#define DIRENT_RESERVE 256

/*
 * After the main process of an exec exits, its pipes may still be held open
 * by a background grandchild (`sh -c 'daemon &'`).  We wait GRACE_MS for
 * them to reach EOF, restarting the wait while data keeps coming, but never
 * longer than GRACE_CAP_MS after the exit; then we read what is buffered,
 * close our ends and send EXIT.  The common case (no grandchild) sees EOF
 * together with the exit and pays nothing.
 */
#define GRACE_MS     100
#define GRACE_CAP_MS 2000

/* How long a final RESULT or SHUTDOWN acknowledgement may take to leave. */
#define FINAL_FLUSH_MS 2000

extern char **environ;

struct exec {
	bool used;
	uint32_t id;
	pid_t pid;
	bool reaped;
	int wstatus;
	int out_fd, err_fd, in_fd, status_fd;
	bool has_stdin;	     /* EXEC asked for STDIN frames (LG_EXEC_STDIN) */
	struct lg_buf in_q;  /* stdin the child has not taken yet */
	bool in_eof;	     /* the host sent EOF: close stdin once in_q drains */
	uint32_t in_unacked; /* STDIN bytes received and not yet ACKed: <= window */
	uint32_t in_ack_due; /* of those, written to the child or dropped: the next ACK */
	bool timed_out;
	uint64_t deadline; /* 0: no timeout */
	uint64_t grace_until, grace_cap;
	uint32_t start_errno; /* the command could not be started: why */
	char *start_msg;
};

struct agent {
	int fd;
	int sigfd;
	int end;	       /* enum agent_end, 0 while running */
	int setup_errno;       /* the root file system could not be set up: why (HELLO) */
	const char *setup_msg; /* borrowed from agent_serve's caller */
	bool shutdown;
	struct lg_reader rd;
	struct lg_buf out;
	struct lg_buf fields; /* scratch: op-specific fields of the next RESULT */
	struct exec execs[MAX_EXECS];
	uint8_t chunk[LG_DATA_CHUNK];
};

/*
 * What a child that failed before or at exec writes to its status pipe
 * (close-on-exec, so a successful exec leaves it empty).  One write of at
 * most PIPE_BUF bytes, so it arrives whole.
 */
struct child_status {
	int32_t err;
	int32_t setup; /* 1: failed before exec (ERRNO goes to the host), 0: exec itself */
	char msg[248];
};

/* ---- small helpers ---- */

void agent_log(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	/* One write per line, so lines of concurrent writers do not interleave. */
	dprintf(STDERR_FILENO, "lg-agent: %.*s", n, buf);
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static uint32_t ftype_of(mode_t m)
{
	if (S_ISREG(m))
		return LG_FTYPE_FILE;
	if (S_ISDIR(m))
		return LG_FTYPE_DIR;
	if (S_ISLNK(m))
		return LG_FTYPE_SYMLINK;
	return LG_FTYPE_OTHER;
}

static int need_path(const struct req *rq, struct lg_err **err)
{
	if (rq->path == NULL)
		return lg_err_set(err, EINVAL, "missing PATH");
	/* "" is ENOENT for the kernel; say so before lg_mkdir_p() sees it. */
	if (rq->path[0] == '\0')
		return lg_err_set(err, ENOENT, "empty PATH");
	return 0;
}

/* ---- output queue ---- */

static void end_session(struct agent *a, int why)
{
	if (a->end == 0)
		a->end = why;
}

/* Writes what the port takes without blocking. */
static void flush_out(struct agent *a)
{
	while (lg_buf_pending(&a->out) > 0) {
		ssize_t w = write(a->fd, lg_buf_head(&a->out), lg_buf_pending(&a->out));
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				end_session(a, AGENT_END_IO);
			return;
		}
		lg_buf_consume(&a->out, (size_t)w);
	}
}

/* For the last frames of a session only: waits up to timeout_ms for them to leave. */
static void flush_final(struct agent *a, int timeout_ms)
{
	uint64_t deadline = lg_now_ms() + (uint64_t)timeout_ms;

	for (;;) {
		struct pollfd pfd = {.fd = a->fd, .events = POLLOUT};
		uint64_t now;
		ssize_t w;

		if (lg_buf_pending(&a->out) == 0)
			return;
		w = write(a->fd, lg_buf_head(&a->out), lg_buf_pending(&a->out));
		if (w > 0) {
			lg_buf_consume(&a->out, (size_t)w);
			continue;
		}
		if (w < 0 && errno != EAGAIN && errno != EINTR)
			return;
		now = lg_now_ms();
		if (now >= deadline)
			return;
		if (poll(&pfd, 1, (int)(deadline - now)) < 0 && errno != EINTR)
			return;
		if (pfd.revents & (POLLERR | POLLHUP))
			return;
	}
}

static void send_result(struct agent *a, uint32_t id, const struct lg_err *err,
			const struct lg_buf *fields)
{
	size_t start = lg_frame_begin(&a->out, LG_MSG_RESULT, id);

	if (err != NULL) {
		lg_tlv_put_u32(&a->out, LG_TAG_ERRNO,
			       err->errnum > 0 ? (uint32_t)err->errnum : EIO);
		lg_tlv_put_str(&a->out, LG_TAG_MESSAGE, err->msg);
	} else {
		lg_tlv_put_u32(&a->out, LG_TAG_ERRNO, 0);
		if (fields != NULL)
			lg_buf_append(&a->out, lg_buf_head(fields), lg_buf_pending(fields));
	}
	if (lg_frame_end(&a->out, start) < 0) {
		/* The ops keep their fields under the limit; this is a bug, not a crash. */
		start = lg_frame_begin(&a->out, LG_MSG_RESULT, id);
		lg_tlv_put_u32(&a->out, LG_TAG_ERRNO, EMSGSIZE);
		lg_tlv_put_str(&a->out, LG_TAG_MESSAGE, "result too large");
		lg_frame_end(&a->out, start);
	}
}

static void send_hello(struct agent *a)
{
	size_t start = lg_frame_begin(&a->out, LG_MSG_HELLO, 0);

	lg_tlv_put_u32(&a->out, LG_TAG_VERSION, LG_PROTO_VERSION);
	lg_tlv_put_str(&a->out, LG_TAG_AGENT, "lg-agent " LG_VERSION);
	if (a->setup_errno != 0) {
		lg_tlv_put_u32(&a->out, LG_TAG_ERRNO, (uint32_t)a->setup_errno);
		lg_tlv_put_str(&a->out, LG_TAG_MESSAGE,
			       a->setup_msg != NULL ? a->setup_msg : "unknown error");
	}
	lg_frame_end(&a->out, start);
}

/* ---- execs ---- */

static struct exec *find_exec(struct agent *a, uint32_t id)
{
	for (size_t i = 0; i < MAX_EXECS; i++)
		if (a->execs[i].used && a->execs[i].id == id)
			return &a->execs[i];
	return NULL;
}

static struct exec *find_pid(struct agent *a, pid_t pid)
{
	for (size_t i = 0; i < MAX_EXECS; i++)
		if (a->execs[i].used && !a->execs[i].reaped && a->execs[i].pid == pid)
			return &a->execs[i];
	return NULL;
}

static bool pipes_open(const struct exec *e)
{
	return e->out_fd >= 0 || e->err_fd >= 0;
}

/*
 * The child calls setsid() first thing, so its pid is the group id.  A
 * KILL that races with that setsid() finds no group yet: signal the
 * process itself then.  After the main process is reaped the group id
 * stays valid (and unreused) as long as any member lives.
 */
static int kill_group(struct exec *e, int sig)
{
	if (kill(-e->pid, sig) == 0)
		return 0;
	if (errno == ESRCH && !e->reaped && kill(e->pid, sig) == 0)
		return 0;
	return -errno;
}

static void exec_release(struct exec *e)
{
	close_fd(&e->out_fd);
	close_fd(&e->err_fd);
	close_fd(&e->in_fd);
	close_fd(&e->status_fd);
	lg_buf_free(&e->in_q);
	free(e->start_msg);
	memset(e, 0, sizeof(*e));
	e->out_fd = e->err_fd = e->in_fd = e->status_fd = -1;
}

static void send_exit(struct agent *a, struct exec *e)
{
	size_t start = lg_frame_begin(&a->out, LG_MSG_EXIT, e->id);

	if (WIFSIGNALED(e->wstatus))
		lg_tlv_put_u32(&a->out, LG_TAG_SIGNAL, (uint32_t)WTERMSIG(e->wstatus));
	else
		lg_tlv_put_u32(&a->out, LG_TAG_EXIT_CODE, (uint32_t)WEXITSTATUS(e->wstatus));
	lg_tlv_put_u32(&a->out, LG_TAG_TIMED_OUT, e->timed_out ? 1 : 0);
	lg_tlv_put_u32(&a->out, LG_TAG_ERRNO, e->start_errno);
	if (e->start_msg != NULL)
		lg_tlv_put_str(&a->out, LG_TAG_MESSAGE, e->start_msg);
	lg_frame_end(&a->out, start);
}

/* EXIT goes out only after all output: the host may rely on that order. */
static void exec_maybe_finish(struct agent *a, struct exec *e)
{
	if (!e->used || !e->reaped || pipes_open(e))
		return;
	send_exit(a, e);
	exec_release(e);
}

static void read_status(struct exec *e)
{
	struct child_status st;
	ssize_t n;
	size_t len;

	if (e->status_fd < 0)
		return;
	/* The child is gone, so whatever it wrote is already in the pipe. */
	n = read(e->status_fd, &st, sizeof(st));
	close_fd(&e->status_fd);
	if (n < (ssize_t)offsetof(struct child_status, msg) || !st.setup)
		return;
	len = (size_t)n - offsetof(struct child_status, msg);
	e->start_errno = st.err > 0 ? (uint32_t)st.err : EIO;
	e->start_msg = xmalloc(len + 1);
	memcpy(e->start_msg, st.msg, len);
	e->start_msg[len] = '\0';
}

/*
 * Failure in the child between fork and exec.  Setup failures (before
 * exec) reach the host as EXIT's ERRNO and MESSAGE: the command never ran.
 * Exec failures behave like a shell's: a line on the command's stderr and
 * exit status 127 (not found) or 126, ERRNO 0.
 */
static void __attribute__((noreturn, format(printf, 5, 6)))
child_fail(int stat_w, bool setup, int errnum, int code, const char *fmt, ...)
{
	struct child_status st = {.err = errnum, .setup = setup};
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(st.msg, sizeof(st.msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(st.msg))
		n = (int)sizeof(st.msg) - 1;
	if (write(stat_w, &st, offsetof(struct child_status, msg) + (size_t)n) < 0) {
		/* Nothing left to tell anyone with; the exit status still says it. */
	}
	if (!setup)
		dprintf(STDERR_FILENO, "lg-agent: %s\n", st.msg);
	_exit(code);
}

/*
 * Only the host ends a sandbox.  The agent is PID 1: if a command could
 * reboot(2) the guest (`poweroff -f`, `reboot -f`, `halt -f`), a green
 * command would destroy a sandbox whose sandbox_destroy needs a human's
 * yes, and the work in it with it.  So every command runs without
 * CAP_SYS_BOOT: out of the bounding set (no setuid binary or file
 * capability brings it back) and out of the effective, permitted and
 * inheritable sets (which also clears it from the ambient set).
 *
 * Not covered: a root command can still write 'o' or 'b' to
 * /proc/sysrq-trigger, which needs no capability.  A read-only bind over
 * it would only hold against a command without CAP_SYS_ADMIN, and taking
 * that away is more than this step should do (docs/agent-protocol.md).
 *
 * Outside a VM (`lg-agent --fd` in tests, as a user without CAP_SETPCAP)
 * the bounding set cannot be changed; that is fine only when we do not
 * hold CAP_SYS_BOOT ourselves.  Returns 0 or a positive errno.
 */
static int drop_boot_cap(void)
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
	const uint32_t bit = 1u << (CAP_SYS_BOOT % 32);
	const int word = CAP_SYS_BOOT / 32;
	bool bset_failed = false;

	if (prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT, 0, 0, 0) < 0) {
		if (errno != EPERM)
			return errno;
		bset_failed = true;
	}
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capget, &hdr, data) < 0)
		return errno;
	if (bset_failed && (data[word].permitted & bit))
		return EPERM;
	data[word].effective &= ~bit;
	data[word].permitted &= ~bit;
	data[word].inheritable &= ~bit;
	if (syscall(SYS_capset, &hdr, data) < 0)
		return errno;
	return 0;
}

/* Sets KEY=VAL in envp unless EXEC's ENV set KEY (the request wins). Child only: leaks. */
static char **env_default(char **envp, const struct req *rq, const char *key, const char *val)
{
	size_t klen = strlen(key), n;

	for (size_t i = 0; i < rq->envc; i++)
		if (strncmp(rq->env[i], key, klen) == 0 && rq->env[i][klen] == '=')
			return envp;
	for (n = 0; envp[n] != NULL; n++) {
		if (strncmp(envp[n], key, klen) == 0 && envp[n][klen] == '=') {
			envp[n] = xasprintf("%s=%s", key, val);
			return envp;
		}
	}
	envp = xrealloc(envp, (n + 2) * sizeof(char *));
	envp[n] = xasprintf("%s=%s", key, val);
	envp[n + 1] = NULL;
	return envp;
}

/*
 * EXEC's USER: groups, then gid, then uid, as login(1) does; each needs
 * the privilege the next one gives up.  The agent is single-threaded, so
 * glibc's set*id broadcast to other threads (the jailer's problem) has
 * nobody to wait for.  For a uid other than 0 the kernel clears every
 * capability at setresuid, so the command has none; for root the set is
 * what drop_boot_cap() left.
 */
static void become_user(int stat_w, const struct guest_user *u)
{
	if (setgroups(u->ngroups, u->groups) < 0)
		child_fail(stat_w, true, errno, 126, "setgroups for user %s: %s", u->name,
			   strerror(errno));
	if (setresgid(u->gid, u->gid, u->gid) < 0)
		child_fail(stat_w, true, errno, 126, "setgid %u for user %s: %s", (unsigned)u->gid,
			   u->name, strerror(errno));
	if (setresuid(u->uid, u->uid, u->uid) < 0)
		child_fail(stat_w, true, errno, 126, "setuid %u for user %s: %s", (unsigned)u->uid,
			   u->name, strerror(errno));
}

static void __attribute__((noreturn))
exec_child(const struct req *rq, char **envp, int in_r, int out_w, int err_w, int stat_w)
{
	struct guest_user user = {0};
	sigset_t none;

	/* Its own session and process group, so KILL and timeouts reach every descendant. */
	if (setsid() < 0)
		child_fail(stat_w, true, errno, 126, "setsid: %s", strerror(errno));
	/* Never run a command that could power the sandbox off (see drop_boot_cap). */
	int cap_err = drop_boot_cap();
	if (cap_err != 0)
		child_fail(stat_w, true, cap_err, 126, "drop CAP_SYS_BOOT: %s", strerror(cap_err));
	/*
	 * Resolved here, in the child, not in PID 1: the files are the image's
	 * and any root command may have rewritten them (guest/user.h).
	 */
	if (rq->user != NULL) {
		struct lg_err *uerr = NULL;

		if (user_lookup(rq->user, &user, &uerr) < 0)
			child_fail(stat_w, true, uerr->errnum, 126, "%s", uerr->msg);
	}
	if (in_r < 0) {
		in_r = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (in_r < 0)
			child_fail(stat_w, true, errno, 126, "open /dev/null: %s", strerror(errno));
	}
	/* agent_serve() keeps 0-2 open, so these pipe ends are >= 3 and dup2 clears CLOEXEC. */
	if (dup2(in_r, STDIN_FILENO) < 0 || dup2(out_w, STDOUT_FILENO) < 0 ||
	    dup2(err_w, STDERR_FILENO) < 0)
		child_fail(stat_w, true, errno, 126, "dup2: %s", strerror(errno));
	/*
	 * The agent blocks SIGCHLD (for its signalfd) and ignores SIGPIPE;
	 * both survive exec, and a command that never gets SIGPIPE keeps
	 * writing into a closed pipeline forever.
	 */
	for (int sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (rq->user != NULL) {
		become_user(stat_w, &user);
		envp = env_default(envp, rq, "HOME", user.home);
		envp = env_default(envp, rq, "USER", user.name);
		envp = env_default(envp, rq, "LOGNAME", user.name);
	}
	/* After the switch: the user's own permissions decide whether it may enter. */
	if (rq->cwd != NULL && chdir(rq->cwd) < 0)
		child_fail(stat_w, true, errno, 126, "chdir %s: %s", rq->cwd, strerror(errno));
	if (rq->cwd == NULL && rq->user != NULL && chdir(user.home) < 0 && chdir("/") < 0)
		child_fail(stat_w, true, errno, 126, "chdir /: %s", strerror(errno));
	/* execvp looks PATH up in environ: the command's PATH, if ENV set one. */
	environ = envp;
	execvp(rq->argv[0], rq->argv);
	if (errno == ENOENT)
		child_fail(stat_w, false, errno, 127, "%s: command not found", rq->argv[0]);
	child_fail(stat_w, false, errno, 126, "%s: %s", rq->argv[0], strerror(errno));
}

/* The agent's environment with the request's "K=V" entries on top. Borrows all strings. */
static char **build_env(const struct req *rq, struct lg_err **err)
{
	size_t n = 0;
	char **envp;

	for (char **p = environ; p != NULL && *p != NULL; p++)
		n++;
	envp = xmalloc((n + rq->envc + 1) * sizeof(char *));
	if (n > 0)
		memcpy(envp, environ, n * sizeof(char *));
	for (size_t i = 0; i < rq->envc; i++) {
		const char *kv = rq->env[i];
		const char *eq = strchr(kv, '=');
		size_t klen, j;

		if (eq == NULL || eq == kv) {
			free(envp);
			lg_err_set(err, EINVAL, "ENV \"%.64s\" is not KEY=VALUE", kv);
			return NULL;
		}
		klen = (size_t)(eq - kv) + 1;
		for (j = 0; j < n; j++)
			if (strncmp(envp[j], kv, klen) == 0)
				break;
		envp[j] = rq->env[i];
		if (j == n)
			n++;
	}
	envp[n] = NULL;
	return envp;
}

static void close_pair(int (*p)[2])
{
	close_fd(&(*p)[0]);
	close_fd(&(*p)[1]);
}
#define cleanup_pair __attribute__((cleanup(close_pair)))

static int op_exec(struct agent *a, uint32_t id, struct req *rq, struct lg_buf *fields,
		   struct lg_err **err)
{
	cleanup_pair int out[2] = {-1, -1};
	cleanup_pair int errp[2] = {-1, -1};
	cleanup_pair int in[2] = {-1, -1};
	cleanup_pair int status[2] = {-1, -1};
	cleanup_free char **envp = NULL;
	struct exec *e = NULL;
	pid_t pid;

	if (rq->argc == 0)
		return lg_err_set(err, EINVAL, "EXEC without ARGV");
	if (find_exec(a, id) != NULL)
		return lg_err_set(err, EEXIST, "exec id %u is still running", id);
	for (size_t i = 0; i < MAX_EXECS && e == NULL; i++)
		if (!a->execs[i].used)
			e = &a->execs[i];
	if (e == NULL)
		return lg_err_set(err, EAGAIN, "too many concurrent execs (at most %d)", MAX_EXECS);
	envp = build_env(rq, err);
	if (envp == NULL)
		return -EINVAL;
	/* CLOEXEC everywhere: no exec may inherit the port or another exec's pipes. */
	if (pipe2(out, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0 ||
	    pipe2(status, O_CLOEXEC) < 0 ||
	    ((rq->flags & LG_EXEC_STDIN) && pipe2(in, O_CLOEXEC) < 0))
		return lg_err_sys(err, "pipe");
	pid = fork();
	if (pid < 0)
		return lg_err_sys(err, "fork");
	if (pid == 0)
		exec_child(rq, envp, in[0], out[1], errp[1], status[1]);

	lg_set_nonblock(out[0], true);
	lg_set_nonblock(errp[0], true);
	lg_set_nonblock(status[0], true);
	if (in[1] >= 0)
		lg_set_nonblock(in[1], true);
	e->used = true;
	e->id = id;
	e->pid = pid;
	e->out_fd = steal_fd(&out[0]);
	e->err_fd = steal_fd(&errp[0]);
	e->in_fd = steal_fd(&in[1]);
	e->has_stdin = e->in_fd >= 0;
	e->status_fd = steal_fd(&status[0]);
	e->deadline = rq->timeout_ms ? lg_now_ms() + rq->timeout_ms : 0;
	/* The child's ends close on return; EOF on the pipes then means the child is done. */
	return 1;
}

/* The command closed its stdin: what is queued is dropped, and returned as credit. */
static void stdin_drop(struct exec *e)
{
	close_fd(&e->in_fd);
	e->in_ack_due += (uint32_t)lg_buf_pending(&e->in_q);
	lg_buf_free(&e->in_q);
}

static void stdin_pump(struct exec *e)
{
	while (lg_buf_pending(&e->in_q) > 0) {
		ssize_t w = write(e->in_fd, lg_buf_head(&e->in_q), lg_buf_pending(&e->in_q));
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return;
			/* EPIPE: the command closed its stdin; it does not want the rest. */
			stdin_drop(e);
			return;
		}
		lg_buf_consume(&e->in_q, (size_t)w);
		e->in_ack_due += (uint32_t)w;
	}
	lg_buf_free(&e->in_q);
	if (e->in_eof)
		close_fd(&e->in_fd);
}

static void protocol_violation(struct agent *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * STDIN for an exec that is gone or took no stdin is dropped: racing the
 * exit is normal.  For a running exec the host must keep to the window;
 * one that does not is broken, and the session ends (it cannot be told to
 * slow down any other way).
 */
static void on_stdin(struct agent *a, uint32_t id, const uint8_t *p, size_t n)
{
	struct exec *e = find_exec(a, id);

	if (e == NULL || !e->has_stdin)
		return;
	if (e->in_eof) {
		protocol_violation(a, "STDIN for exec %u after its EOF", id);
		return;
	}
	if (n > LG_STDIN_WINDOW - e->in_unacked) {
		protocol_violation(a,
				   "STDIN of %zu bytes for exec %u overruns the window: %u of %u "
				   "bytes are not acknowledged yet",
				   n, id, e->in_unacked, LG_STDIN_WINDOW);
		return;
	}
	e->in_unacked += (uint32_t)n;
	if (n == 0)
		e->in_eof = true;
	else if (e->in_fd < 0)
		e->in_ack_due += (uint32_t)n; /* the command closed its stdin: drop, but credit */
	else
		lg_buf_append(&e->in_q, p, n);
	if (e->in_fd >= 0)
		stdin_pump(e);
}

/*
 * Returns credit for the stdin the children took.  Batched while a child
 * still has stdin queued; sent at once when its queue is empty, so the
 * host is never left waiting with credit on our side.  Held back while the
 * host is slow to read our output, like NET_ACK: it then gets no more
 * stdin to send either.
 */
static void send_stdin_acks(struct agent *a)
{
	for (size_t i = 0; i < MAX_EXECS && lg_buf_pending(&a->out) < OUT_HIGH; i++) {
		struct exec *e = &a->execs[i];
		uint8_t le[4];

		if (!e->used || e->in_ack_due == 0)
			continue;
		if (e->in_ack_due < STDIN_ACK_BATCH && lg_buf_pending(&e->in_q) > 0)
			continue;
		lg_put_le32(le, e->in_ack_due);
		lg_frame_data(&a->out, LG_MSG_STDIN_ACK, e->id, le, sizeof(le));
		e->in_unacked -= e->in_ack_due;
		e->in_ack_due = 0;
	}
}

static void note_output_after_exit(struct exec *e)
{
	uint64_t t;

	if (!e->reaped)
		return;
	t = lg_now_ms() + GRACE_MS;
	e->grace_until = t < e->grace_cap ? t : e->grace_cap;
}

static void read_output(struct agent *a, struct exec *e, int *fdp, uint16_t type)
{
	ssize_t n = read(*fdp, a->chunk, sizeof(a->chunk));

	if (n > 0) {
		lg_frame_data(&a->out, type, e->id, a->chunk, (size_t)n);
		note_output_after_exit(e);
		return;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	close_fd(fdp);
}

/* Takes what is buffered in a pipe now (bounded: a writer may still be going), then closes it. */
static void drain_and_close(struct agent *a, struct exec *e, int *fdp, uint16_t type)
{
	size_t budget = OUT_HIGH;

	while (*fdp >= 0 && budget > 0) {
		ssize_t n = read(*fdp, a->chunk, sizeof(a->chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		lg_frame_data(&a->out, type, e->id, a->chunk, (size_t)n);
		budget -= (size_t)n < budget ? (size_t)n : budget;
	}
	close_fd(fdp);
}

static void reap_children(struct agent *a)
{
	struct signalfd_siginfo si;
	int st;
	pid_t pid;

	while (read(a->sigfd, &si, sizeof(si)) > 0)
		;
	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		struct exec *e = find_pid(a, pid);
		uint64_t now;

		if (e == NULL)
			continue; /* an orphan reparented to PID 1: just let it go */
		now = lg_now_ms();
		e->reaped = true;
		e->wstatus = st;
		e->grace_until = now + GRACE_MS;
		e->grace_cap = now + GRACE_CAP_MS;
		read_status(e);
		exec_maybe_finish(a, e);
	}
}

/* Fires timeouts and grace periods; returns the poll() timeout until the next one. */
static int run_timers(struct agent *a)
{
	uint64_t now = lg_now_ms();
	uint64_t next = UINT64_MAX;

	for (size_t i = 0; i < MAX_EXECS; i++) {
		struct exec *e = &a->execs[i];

		if (!e->used)
			continue;
		if (!e->reaped && e->deadline != 0 && !e->timed_out) {
			if (now >= e->deadline) {
				e->timed_out = true;
				kill_group(e, SIGKILL);
			} else if (e->deadline < next) {
				next = e->deadline;
			}
		}
		if (e->reaped && pipes_open(e)) {
			if (now >= e->grace_until) {
				if (lg_buf_pending(&a->out) < OUT_HIGH) {
					drain_and_close(a, e, &e->out_fd, LG_MSG_STDOUT);
					drain_and_close(a, e, &e->err_fd, LG_MSG_STDERR);
					exec_maybe_finish(a, e);
					continue;
				}
				/*
				 * We are not reading the pipes while the host is
				 * slow; the output still in them is the command's
				 * and must not be cut off, so the grace waits too.
				 */
				e->grace_until = now + GRACE_MS;
				if (e->grace_cap < e->grace_until)
					e->grace_cap = e->grace_until;
			}
			if (e->grace_until < next)
				next = e->grace_until;
		}
	}
	if (next == UINT64_MAX)
		return -1;
	return next - now > INT_MAX ? INT_MAX : (int)(next - now);
}

/* ---- file and control requests ---- */

/*
 * PING's RESULT names the agent and its protocol (4): after a snapshot
 * restore the host never sees HELLO, so this is how it learns both.
 */
static int op_ping(struct agent *a, uint32_t id, struct req *rq, struct lg_buf *fields,
		   struct lg_err **err)
{
	lg_tlv_put_u32(fields, LG_TAG_VERSION, LG_PROTO_VERSION);
	lg_tlv_put_str(fields, LG_TAG_AGENT, "lg-agent " LG_VERSION);
	return 0;
}

/*
 * Credits the host's seed to the kernel's input pool and makes the CRNG
 * reseed from it now.  Both are needed: RNDADDENTROPY alone mixes the bytes
 * into the input pool and credits them, but once the CRNG is initialized
 * (it is, in every restored or pooled guest) Linux reseeds it from that
 * pool only on its own schedule (every minute at most), so /dev/urandom and
 * getrandom() would keep handing out the stream every clone of the snapshot
 * shares until then.  RNDRESEEDCRNG (Linux 5.5+) reseeds the base CRNG
 * immediately and bumps its generation, so every per-CPU CRNG rekeys on
 * its next use.
 */
static int reseed(const uint8_t *seed, size_t n, struct lg_err **err)
{
	struct {
		struct rand_pool_info info;
		uint8_t buf[LG_ADOPT_SEED_MAX];
	} req;
	int fd, r = 0;

	memset(&req, 0, sizeof(req));
	req.info.entropy_count = (int)(n * 8);
	req.info.buf_size = (int)n;
	memcpy(req.buf, seed, n);
	fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return lg_err_sys(err, "adopt: /dev/urandom");
	if (ioctl(fd, RNDADDENTROPY, &req.info) < 0)
		r = lg_err_sys(err, "adopt: RNDADDENTROPY");
	else if (ioctl(fd, RNDRESEEDCRNG) < 0)
		r = lg_err_sys(err, "adopt: RNDRESEEDCRNG");
	explicit_bzero(&req, sizeof(req));
	close(fd);
	return r;
}

/* /etc/machine-id, replaced atomically; 0 written, 1 the root is read-only, <0 error. */
static int write_machine_id(const char *id, struct lg_err **err)
{
	static const char tmp[] = "/etc/.machine-id.lg";
	char line[LG_MACHINE_ID_LEN + 2];
	int fd;

	snprintf(line, sizeof(line), "%s\n", id);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0444);
	if (fd < 0) {
		if (errno == EROFS || errno == ENOENT)
			return 1; /* no /etc, or a read-only root: nothing to write */
		return lg_err_sys(err, "adopt: %s", tmp);
	}
	if (lg_write_all(fd, line, strlen(line)) < 0 || close(fd) < 0) {
		int e = errno;
		unlink(tmp);
		return lg_err_set(err, e, "adopt: write %s", tmp);
	}
	if (rename(tmp, "/etc/machine-id") < 0) {
		int e = errno;
		unlink(tmp);
		return lg_err_set(err, e, "adopt: /etc/machine-id");
	}
	return 0;
}

/*
 * ADOPT: this guest becomes its claimer's, before any command of theirs
 * runs.  A restored clone shares its RNG state, clock (stale by the
 * snapshot's age) and names with every other clone of the snapshot.
 * req_parse checked each field's form; all four are required.
 */
static int op_adopt(struct agent *a, uint32_t id, struct req *rq, struct lg_buf *fields,
		    struct lg_err **err)
{
	uint32_t flags = 0;
	struct timespec ts;
	int r;

	if (rq->seed == NULL || !rq->has_realtime || rq->hostname == NULL || rq->machine_id == NULL)
		return lg_err_set(err, EINVAL,
				  "ADOPT needs SEED, REALTIME_NS, HOSTNAME and MACHINE_ID");
	if (getpid() != 1) {
		/* lg-agent --fd on a host (tests): never touch the host's RNG, clock or names. */
		lg_tlv_put_u32(fields, LG_TAG_FLAGS, LG_ADOPT_DRY_RUN);
		return 0;
	}
	r = reseed(rq->seed, rq->seed_len, err);
	if (r < 0)
		return r;
	ts.tv_sec = (time_t)(rq->realtime_ns / 1000000000u);
	ts.tv_nsec = (long)(rq->realtime_ns % 1000000000u);
	if (clock_settime(CLOCK_REALTIME, &ts) < 0)
		return lg_err_sys(err, "adopt: clock_settime");
	if (sethostname(rq->hostname, strlen(rq->hostname)) < 0)
		return lg_err_sys(err, "adopt: sethostname");
	r = write_machine_id(rq->machine_id, err);
	if (r < 0)
		return r;
	if (r == 0)
		flags |= LG_ADOPT_MACHINE_ID_WRITTEN;
	lg_tlv_put_u32(fields, LG_TAG_FLAGS, flags);
	return 0;
}

static int op_shutdown(struct agent *a, uint32_t id, struct req *rq, struct lg_buf *fields,
		       struct lg_err **err)
{
	a->shutdown = true;
	return 0;
}

static int op_kill(struct agent *a, uint32_t id, struct req *rq, struct lg_buf *fields,
		   struct lg_err **err)
{
	struct exec *e = find_exec(a, id);
	int sig = rq->has_signal ? (int)rq->signal : SIGKILL;
	int r;

	if (rq->has_signal && rq->signal >= (uint32_t)NSIG)
		return lg_err_set(err, EINVAL, "signal %u out of range", rq->signal);
	if (e == NULL)
		return lg_err_set(err, ESRCH, "kill: no running exec with id %u", id);
	r = kill_group(e, sig);
	if (r < 0)
		return lg_err_set(err, -r, "kill exec %u", id);
	return 0;
}

/* mkdir -p of the directory that will hold path; nothing to do for "x" or "/x". */
static int make_parents(const char *path)
{
	cleanup_free char *dir = xstrdup(path);
	char *slash;
	size_t n = strlen(dir);

	while (n > 1 && dir[n - 1] == '/')
		dir[--n] = '\0';
	slash = strrchr(dir, '/');
	if (slash == NULL || slash == dir)
		return 0;
	*slash = '\0';
	return lg_mkdir_p(dir, 0755);
}

static int op_file_write(struct agent *a, uint32_t id, struct req *rq, struct lg_buf *fields,
			 struct lg_err **err)
{
	mode_t mode = rq->has_mode ? (mode_t)(rq->mode & 07777) : 0644;
	/* O_NONBLOCK: a FIFO without a reader must be an error, not a hung agent. */
	int oflags = O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
	bool append = rq->flags & LG_WRITE_APPEND;
	cleanup_close int fd = -1;
	size_t done = 0;
	struct stat st;
	int r;

	if ((r = need_path(rq, err)) < 0)
		return r;
	if (rq->flags & LG_WRITE_TRUNC)
		oflags |= O_TRUNC;
	if (append)
		oflags |= O_APPEND;
	if (rq->offset > (uint64_t)INT64_MAX - rq->data_len)
		return lg_err_set(err, EINVAL, "write %s: offset %llu too large", rq->path,
				  (unsigned long long)rq->offset);
	if (rq->flags & LG_WRITE_MKDIRS) {
		r = make_parents(rq->path);
		if (r < 0)
			return lg_err_set(err, -r, "create parent directories of %s", rq->path);
	}
	fd = open(rq->path, oflags, mode);
	if (fd < 0)
		return lg_err_sys(err, "open %s", rq->path);
	/* The mode asked for, exactly: not filtered by umask, also on an existing file. */
	if (rq->has_mode && fchmod(fd, mode) < 0)
		return lg_err_sys(err, "chmod %s", rq->path);
	while (done < rq->data_len) {
		ssize_t w;

		if (append)
			w = write(fd, rq->data + done, rq->data_len - done);
		else
			w = pwrite(fd, rq->data + done, rq->data_len - done,
				   (off_t)(rq->offset + done));
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return lg_err_sys(err, "write %s", rq->path);
		if (w == 0)
			return lg_err_set(err, EIO, "write %s: no progress", rq->path);
		done += (size_t)w;
	}
	if (fstat(fd, &st) < 0)
		return lg_err_sys(err, "stat %s", rq->path);
	/* close() is where some filesystems report write errors. */
	if (close(steal_fd(&fd)) < 0)
		return lg_err_sys(err, "close %s", rq->path);
	lg_tlv_put_u64(fields, LG_TAG_SIZE, (uint64_t)st.st_size);
	return 0;
}

static int op_file_read(struct agent *a, uint32_t id, struct req *rq, struct lg_buf *fields,
			struct lg_err **err)
{
	size_t want = rq->has_length && rq->length < READ_MAX ? rq->length : READ_MAX;
	cleanup_close int fd = -1;
	cleanup_free uint8_t *buf = NULL;
	bool stream = false, at_end = false;
	size_t got = 0;
	struct stat st;
	int r;

	if ((r = need_path(rq, err)) < 0)
		return r;
	if (rq->offset > (uint64_t)INT64_MAX - want)
		return lg_err_set(err, EINVAL, "read %s: offset %llu too large", rq->path,
				  (unsigned long long)rq->offset);
	/* O_NONBLOCK: opening or reading a FIFO must not hang the agent. */
	fd = open(rq->path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return lg_err_sys(err, "open %s", rq->path);
	if (fstat(fd, &st) < 0)
		return lg_err_sys(err, "stat %s", rq->path);
	if (S_ISDIR(st.st_mode))
		return lg_err_set(err, EISDIR, "read %s", rq->path);
	buf = xmalloc(want);
	while (got < want) {
		ssize_t n;

		if (stream)
			n = read(fd, buf + got, want - got);
		else
			n = pread(fd, buf + got, want - got, (off_t)(rq->offset + got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == ESPIPE && !stream && rq->offset == 0) {
			stream = true; /* a pipe or a device without positions */
			continue;
		}
		if (n < 0 && errno == EAGAIN)
			break;
		if (n < 0)
			return lg_err_sys(err, "read %s", rq->path);
		if (n == 0) {
			at_end = true;
			break;
		}
		got += (size_t)n;
	}
	/*
	 * A short read is the end; so is reaching st_size of a regular file.
	 * procfs and sysfs files report size 0, hence not the size alone.
	 */
	if (S_ISREG(st.st_mode) && rq->offset + got >= (uint64_t)st.st_size)
		at_end = true;
	lg_tlv_put(fields, LG_TAG_DATA, buf, got);
	lg_tlv_put_u64(fields, LG_TAG_SIZE, (uint64_t)st.st_size);
	lg_tlv_put_u32(fields, LG_TAG_FLAGS, at_end ? LG_READ_EOF : 0);
	return 0;
}

static uint32_t ftype_of_dtype(unsigned char t)
{
	switch (t) {
	case DT_REG:
		return LG_FTYPE_FILE;
	case DT_DIR:
		return LG_FTYPE_DIR;
	case DT_LNK:
		return LG_FTYPE_SYMLINK;
	default:
		return LG_FTYPE_OTHER;
	}
}

static int op_list_dir(struct agent *a, uint32_t id, struct req *rq, struct lg_buf *fields,
		       struct lg_err **err)
{
	uint8_t ent[LG_DIRENT_FIXED + NAME_MAX + 1];
	bool truncated = false;
	struct dirent *de;
	DIR *d;
	int r;

	if ((r = need_path(rq, err)) < 0)
		return r;
	d = opendir(rq->path);
	if (d == NULL)
		return lg_err_sys(err, "opendir %s", rq->path);
	for (;;) {
		uint32_t ftype, mode = 0;
		uint64_t size = 0;
		struct stat st;
		size_t nlen;

		errno = 0;
		de = readdir(d);
		if (de == NULL) {
			if (errno != 0) {
				r = lg_err_sys(err, "readdir %s", rq->path);
				closedir(d);
				return r;
			}
			break;
		}
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		nlen = strnlen(de->d_name, NAME_MAX + 1);
		if (nlen > NAME_MAX)
			continue;
		/* What does not fit one frame is cut off and said so (see docs). */
		if (lg_buf_pending(fields) + LG_TLV_HDR_SIZE + LG_DIRENT_FIXED + nlen >
		    LG_FRAME_MAX_PAYLOAD - DIRENT_RESERVE) {
			truncated = true;
			break;
		}
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
			ftype = ftype_of(st.st_mode);
			mode = st.st_mode & 07777;
			size = (uint64_t)st.st_size;
		} else {
			ftype = ftype_of_dtype(de->d_type); /* it went away meanwhile */
		}
		lg_put_le32(ent, ftype);
		lg_put_le32(ent + 4, mode);
		lg_put_le64(ent + 8, size);
		memcpy(ent + LG_DIRENT_FIXED, de->d_name, nlen);
		lg_tlv_put(fields, LG_TAG_DIRENT, ent, LG_DIRENT_FIXED + nlen);
	}
	closedir(d);
	if (truncated)
		lg_tlv_put_str(fields, LG_TAG_MESSAGE, "truncated");
	return 0;
}

static int op_stat(struct agent *a, uint32_t id, struct req *rq, struct lg_buf *fields,
		   struct lg_err **err)
{
	struct stat st;
	int r;

	if ((r = need_path(rq, err)) < 0)
		return r;
	if (lstat(rq->path, &st) < 0)
		return lg_err_sys(err, "stat %s", rq->path);
	lg_tlv_put_u32(fields, LG_TAG_FTYPE, ftype_of(st.st_mode));
	lg_tlv_put_u32(fields, LG_TAG_MODE, st.st_mode & 07777);
	lg_tlv_put_u64(fields, LG_TAG_SIZE, (uint64_t)st.st_size);
	lg_tlv_put_u64(fields, LG_TAG_MTIME, st.st_mtime < 0 ? 0 : (uint64_t)st.st_mtime);
	return 0;
}

static int op_mkdir(struct agent *a, uint32_t id, struct req *rq, struct lg_buf *fields,
		    struct lg_err **err)
{
	mode_t mode = rq->has_mode ? (mode_t)(rq->mode & 07777) : 0755;
	bool parents = rq->flags & LG_MKDIR_PARENTS;
	struct stat st;
	int r;

	if ((r = need_path(rq, err)) < 0)
		return r;
	r = mkdir(rq->path, mode);
	if (r < 0 && parents && errno == ENOENT) {
		int pr = make_parents(rq->path);
		if (pr < 0)
			return lg_err_set(err, -pr, "create parent directories of %s", rq->path);
		r = mkdir(rq->path, mode);
	}
	if (r < 0) {
		int saved = errno;
		/* mkdir -p: an existing directory is success, anything else is not. */
		if (saved == EEXIST && parents && stat(rq->path, &st) == 0 && S_ISDIR(st.st_mode))
			return 0;
		errno = saved;
		return lg_err_sys(err, "mkdir %s", rq->path);
	}
	/* Exactly the mode asked for, not filtered by umask. */
	if (rq->has_mode && chmod(rq->path, mode) < 0)
		return lg_err_sys(err, "chmod %s", rq->path);
	return 0;
}

static int op_remove(struct agent *a, uint32_t id, struct req *rq, struct lg_buf *fields,
		     struct lg_err **err)
{
	struct stat st;
	int r;

	if ((r = need_path(rq, err)) < 0)
		return r;
	/* lstat: a symlink is removed itself, never what it points to. */
	if (lstat(rq->path, &st) < 0)
		return lg_err_sys(err, "remove %s", rq->path);
	if (S_ISDIR(st.st_mode) && (rq->flags & LG_REMOVE_RECURSIVE)) {
		/* lg_rm_rf opens every level with O_NOFOLLOW: no escape through a symlink. */
		r = lg_rm_rf(rq->path);
		if (r < 0)
			return lg_err_set(err, -r, "remove %s", rq->path);
		return 0;
	}
	if ((S_ISDIR(st.st_mode) ? rmdir(rq->path) : unlink(rq->path)) < 0)
		return lg_err_sys(err, "remove %s", rq->path);
	return 0;
}

/* ---- dispatch ---- */

/*
 * An op returns 0 (success: RESULT with ERRNO 0 and the fields it put in
 * `fields`), 1 (it answers some other way: EXEC's EXIT), or <0 with *err set.
 */
typedef int (*op_fn)(struct agent *a, uint32_t id, struct req *rq, struct lg_buf *fields,
		     struct lg_err **err);

static const op_fn ops[LG_MSG_MAX_ + 1] = {
    [LG_MSG_PING] = op_ping,	       [LG_MSG_EXEC] = op_exec,
    [LG_MSG_KILL] = op_kill,	       [LG_MSG_FILE_WRITE] = op_file_write,
    [LG_MSG_FILE_READ] = op_file_read, [LG_MSG_LIST_DIR] = op_list_dir,
    [LG_MSG_STAT] = op_stat,	       [LG_MSG_MKDIR] = op_mkdir,
    [LG_MSG_REMOVE] = op_remove,       [LG_MSG_SHUTDOWN] = op_shutdown,
    [LG_MSG_ADOPT] = op_adopt,
};

static void dispatch(struct agent *a, const struct lg_frame_hdr *h, const uint8_t *payload)
{
	op_fn fn = h->type < ARRAY_SIZE(ops) ? ops[h->type] : NULL;
	struct lg_err *err = NULL;
	struct req rq = {0};
	int r;

	if (h->type == LG_MSG_STDIN) {
		on_stdin(a, h->id, payload, h->len);
		return;
	}
	lg_buf_consume(&a->fields, lg_buf_pending(&a->fields));
	if (fn == NULL) {
		r = lg_err_set(&err, EPROTO, "unexpected %s message from the host",
			       lg_msg_name(h->type));
	} else if ((r = req_parse(&rq, payload, h->len, &err)) < 0) {
		lg_err_wrap(&err, "%s", lg_msg_name(h->type));
	} else {
		r = fn(a, h->id, &rq, &a->fields, &err);
	}
	if (r <= 0)
		send_result(a, h->id, r < 0 ? err : NULL, &a->fields);
	req_free(&rq);
	lg_err_free(&err);
}

/*
 * A bad header leaves no way to find the next frame in the stream: say
 * why on id 0 (which no request uses) and end the session.
 */
static void close_with_error(struct agent *a, struct lg_err **err)
{
	lg_err_wrap(err, "closing the connection");
	agent_log("%s", (*err)->msg);
	send_result(a, 0, *err, NULL);
	lg_err_free(err);
	end_session(a, AGENT_END_PROTO);
}

static void protocol_error(struct agent *a, int r)
{
	struct lg_err *err = NULL;
	struct lg_frame_hdr h;

	lg_frame_hdr_decode(a->rd.buf, &h);
	if (r == -EMSGSIZE)
		lg_err_set(&err, EPROTO,
			   "frame header: payload of %u bytes exceeds the limit of %u", h.len,
			   LG_FRAME_MAX_PAYLOAD);
	else
		lg_err_set(&err, EPROTO, "frame header: unknown type %u or flags %#x",
			   (unsigned)h.type, (unsigned)h.flags);
	close_with_error(a, &err);
}

/* A well-framed message that breaks the rules of the stream: the same end as a bad header. */
static void protocol_violation(struct agent *a, const char *fmt, ...)
{
	struct lg_err *err = NULL;
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	lg_err_msg(&err, EPROTO, "%s", msg);
	close_with_error(a, &err);
}

/* Stdin never stalls the port (its credit bounds it); only our own output backlog does. */
static bool can_take_requests(const struct agent *a)
{
	return lg_buf_pending(&a->out) < OUT_HARD;
}

static void process_frames(struct agent *a)
{
	while (a->end == 0 && !a->shutdown && can_take_requests(a)) {
		struct lg_frame_hdr h;
		const uint8_t *payload;
		int r = lg_reader_peek(&a->rd, &h, &payload);

		if (r == 0)
			return;
		if (r < 0) {
			protocol_error(a, r);
			return;
		}
		dispatch(a, &h, payload);
		lg_reader_pop(&a->rd);
	}
}

static void read_port(struct agent *a)
{
	size_t room;
	uint8_t *p = lg_reader_space(&a->rd, &room);
	ssize_t n;

	if (room == 0)
		return;
	n = read(a->fd, p, room);
	if (n > 0)
		lg_reader_commit(&a->rd, (size_t)n);
	else if (n == 0)
		end_session(a, AGENT_END_EOF);
	else if (errno != EAGAIN && errno != EINTR)
		end_session(a, AGENT_END_IO);
}

/* Children get pipes >= 3 only if 0-2 are taken; a closed 0-2 would mix them up. */
static void ensure_std_fds(void)
{
	for (;;) {
		int fd = open("/dev/null", O_RDWR);
		if (fd < 0)
			return;
		if (fd > STDERR_FILENO) {
			close(fd);
			return;
		}
	}
}

/* Where a polled fd came from. */
struct source {
	struct exec *e;
	int *fdp;
	uint16_t type; /* LG_MSG_STDOUT, LG_MSG_STDERR, or LG_MSG_STDIN for the stdin pipe */
};

static void handle_source(struct agent *a, const struct source *s, short revents)
{
	if (!s->e->used || *s->fdp < 0)
		return; /* released earlier in this round */
	if (s->type == LG_MSG_STDIN) {
		if (revents & POLLOUT)
			stdin_pump(s->e);
		else if (revents & (POLLERR | POLLHUP | POLLNVAL))
			stdin_drop(s->e);
		return;
	}
	if (revents & (POLLIN | POLLHUP))
		read_output(a, s->e, s->fdp, s->type);
	else if (revents & (POLLERR | POLLNVAL))
		close_fd(s->fdp);
}

static void serve_loop(struct agent *a)
{
	struct pollfd pfd[2 + 3 * MAX_EXECS];
	struct source src[2 + 3 * MAX_EXECS];

	while (a->end == 0) {
		bool out_ok;
		int n = 0, timeout, r;

		process_frames(a);
		if (a->shutdown)
			end_session(a, AGENT_END_SHUTDOWN);
		if (a->end != 0)
			break;
		send_stdin_acks(a);
		flush_out(a);
		if (a->end != 0)
			break;
		timeout = run_timers(a);

		pfd[n++] =
		    (struct pollfd){.fd = a->fd,
				    .events = (short)((can_take_requests(a) ? POLLIN : 0) |
						      (lg_buf_pending(&a->out) > 0 ? POLLOUT : 0))};
		pfd[n++] = (struct pollfd){.fd = a->sigfd, .events = POLLIN};
		out_ok = lg_buf_pending(&a->out) < OUT_HIGH;
		for (size_t i = 0; i < MAX_EXECS; i++) {
			struct exec *e = &a->execs[i];

			if (!e->used)
				continue;
			/*
			 * A pipe we do not want to read is left out entirely:
			 * poll() would keep reporting its POLLHUP and spin.
			 */
			if (out_ok && e->out_fd >= 0) {
				src[n] = (struct source){e, &e->out_fd, LG_MSG_STDOUT};
				pfd[n++] = (struct pollfd){.fd = e->out_fd, .events = POLLIN};
			}
			if (out_ok && e->err_fd >= 0) {
				src[n] = (struct source){e, &e->err_fd, LG_MSG_STDERR};
				pfd[n++] = (struct pollfd){.fd = e->err_fd, .events = POLLIN};
			}
			if (e->in_fd >= 0 && lg_buf_pending(&e->in_q) > 0) {
				src[n] = (struct source){e, &e->in_fd, LG_MSG_STDIN};
				pfd[n++] = (struct pollfd){.fd = e->in_fd, .events = POLLOUT};
			}
		}

		r = poll(pfd, (nfds_t)n, timeout);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			agent_log("poll: %s", strerror(errno));
			end_session(a, AGENT_END_IO);
			break;
		}
		if (pfd[0].revents & POLLIN)
			read_port(a);
		else if (pfd[0].revents & (POLLHUP | POLLERR | POLLNVAL))
			/* Gone, or (virtio-serial) no host attached to the port any more. */
			end_session(a, (pfd[0].revents & POLLHUP) ? AGENT_END_EOF : AGENT_END_IO);
		if (pfd[1].revents & POLLIN)
			reap_children(a);
		for (int i = 2; i < n; i++)
			if (pfd[i].revents != 0)
				handle_source(a, &src[i], pfd[i].revents);
		for (size_t i = 0; i < MAX_EXECS; i++)
			exec_maybe_finish(a, &a->execs[i]);
	}
}

int agent_serve(int fd, int setup_errno, const char *setup_msg)
{
	struct agent *a;
	sigset_t mask, old;
	int r, sigfd;

	ensure_std_fds();
	if ((r = lg_set_nonblock(fd, true)) < 0 || (r = lg_set_cloexec(fd, true)) < 0) {
		agent_log("port fd %d: %s", fd, strerror(-r));
		return r;
	}
	/* A closed stdin pipe or a vanished host must be EPIPE to handle, not death. */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigprocmask(SIG_BLOCK, &mask, &old);
	sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sigfd < 0) {
		r = -errno;
		agent_log("signalfd: %s", strerror(errno));
		sigprocmask(SIG_SETMASK, &old, NULL);
		return r;
	}

	a = xzalloc(sizeof(*a));
	a->fd = fd;
	a->sigfd = sigfd;
	a->setup_errno = setup_errno;
	a->setup_msg = setup_msg;
	lg_reader_init(&a->rd);
	for (size_t i = 0; i < MAX_EXECS; i++)
		exec_release(&a->execs[i]);
	send_hello(a);

	serve_loop(a);

	for (size_t i = 0; i < MAX_EXECS; i++) {
		struct exec *e = &a->execs[i];
		if (e->used && !e->reaped)
			kill_group(e, SIGKILL);
		exec_release(e);
	}
	/* The host is gone after EOF or an I/O error: nobody to flush to. */
	if (a->end == AGENT_END_SHUTDOWN || a->end == AGENT_END_PROTO)
		flush_final(a, FINAL_FLUSH_MS);
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	r = a->end;
	lg_reader_free(&a->rd);
	lg_buf_free(&a->out);
	lg_buf_free(&a->fields);
	free(a);
	close(sigfd);
	sigprocmask(SIG_SETMASK, &old, NULL);
	return r;
}
