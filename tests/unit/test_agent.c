/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lg-agent end to end on this host: each test starts `lg-agent --fd 3` on
 * one end of a socketpair and speaks the protocol on the other.  Every wait
 * has a deadline, so an agent bug fails a test instead of hanging it.
 *
 * LG_TEST_AGENT=/path/to/lg-agent runs another build of the agent (an ASan
 * or valgrind-friendly dynamic build); LG_TEST_AGENT_WRAPPER="valgrind -q
 * --error-exitcode=99" runs it under a wrapper.
 */
#include "common/util.h"
#include "host/agent_client.h"
#include "proto/proto.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define IO_TIMEOUT_MS	10000
#define EXIT_TIMEOUT_MS 10000

struct frame {
	struct lg_frame_hdr h;
	uint8_t *p;
};

/*
 * The stdin of one exec, sent as the host does: within LG_STDIN_WINDOW,
 * more as STDIN_ACKs return credit.
 */
struct feed {
	bool active;
	uint32_t id;
	const uint8_t *p;
	size_t len, off;
	uint32_t inflight; /* sent, not yet ACKed */
	bool eof_sent;
	uint64_t acked;
};

struct conn {
	int fd;
	pid_t pid;
	struct lg_reader rd;
	struct lg_buf out;
	bool eof;
	struct feed feed;
	bool raw_acks; /* conn_next returns STDIN_ACKs instead of acting on them */
};

static void frame_free(struct frame *f)
{
	free(f->p);
	f->p = NULL;
}

static const char *agent_path(void)
{
	const char *p = getenv("LG_TEST_AGENT");
	return p != NULL && *p ? p : LG_BUILD_DIR "/lg-agent";
}

static void __attribute__((noreturn)) exec_agent(int fd)
{
	const char *wrapper = getenv("LG_TEST_AGENT_WRAPPER");
	char *argv[32];
	int n = 0;
	char *w = wrapper != NULL ? strdup(wrapper) : NULL;

	for (char *tok = w != NULL ? strtok(w, " ") : NULL; tok != NULL && n < 26;
	     tok = strtok(NULL, " "))
		argv[n++] = tok;
	argv[n++] = (char *)agent_path();
	argv[n++] = (char *)"--fd";
	argv[n++] = (char *)"3";
	argv[n] = NULL;
	if (fd != 3) {
		dup2(fd, 3);
	} else {
		fcntl(3, F_SETFD, 0);
	}
	execvp(argv[0], argv);
	_exit(127);
}

static void conn_flush(struct conn *c)
{
	while (lg_buf_pending(&c->out) > 0) {
		ssize_t w = write(c->fd, lg_buf_head(&c->out), lg_buf_pending(&c->out));
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return;
			/* The agent hung up (tests of protocol errors do this): drop the rest. */
			lg_buf_consume(&c->out, lg_buf_pending(&c->out));
			return;
		}
		lg_buf_consume(&c->out, (size_t)w);
	}
}

/* Queues what the window allows of the current feed, then EOF. */
static void feed_pump(struct conn *c)
{
	struct feed *fd = &c->feed;

	while (fd->active && !fd->eof_sent) {
		size_t n = fd->len - fd->off;

		if (n == 0) {
			lg_frame_data(&c->out, LG_MSG_STDIN, fd->id, NULL, 0);
			fd->eof_sent = true;
			break;
		}
		if (n > LG_STDIN_WINDOW - fd->inflight)
			n = LG_STDIN_WINDOW - fd->inflight;
		if (n > LG_DATA_CHUNK)
			n = LG_DATA_CHUNK;
		if (n == 0)
			break;
		lg_frame_data(&c->out, LG_MSG_STDIN, fd->id, fd->p + fd->off, n);
		fd->off += n;
		fd->inflight += (uint32_t)n;
	}
	conn_flush(c);
}

/* Checks an ACK as the host client does, and sends what it allows. */
static void feed_ack(struct conn *c, const struct lg_frame_hdr *h, const uint8_t *p)
{
	uint32_t n = h->len == 4 ? lg_get_le32(p) : 0;

	if (!c->feed.active || h->id != c->feed.id)
		fail_msg("STDIN_ACK for id %u, which has no stdin", h->id);
	if (h->len != 4 || n == 0 || n > c->feed.inflight)
		fail_msg("STDIN_ACK of %u bytes (len %u), %u outstanding", n, h->len,
			 c->feed.inflight);
	c->feed.inflight -= n;
	c->feed.acked += n;
	feed_pump(c);
}

/* 1: *f holds the next frame (free with frame_free); 0: the agent closed the stream. */
static int conn_next(struct conn *c, struct frame *f)
{
	uint64_t deadline = lg_now_ms() + IO_TIMEOUT_MS;

	for (;;) {
		const uint8_t *payload;
		int r = lg_reader_peek(&c->rd, &f->h, &payload);

		assert_true(r >= 0);
		if (r == 1 && f->h.type == LG_MSG_STDIN_ACK && !c->raw_acks) {
			feed_ack(c, &f->h, payload);
			lg_reader_pop(&c->rd);
			deadline = lg_now_ms() + IO_TIMEOUT_MS;
			continue;
		}
		if (r == 1) {
			f->p = xmalloc(f->h.len);
			memcpy(f->p, payload, f->h.len);
			lg_reader_pop(&c->rd);
			return 1;
		}
		if (c->eof)
			return 0;
		conn_flush(c);
		struct pollfd pfd = {.fd = c->fd,
				     .events =
					 (short)(POLLIN | (lg_buf_pending(&c->out) ? POLLOUT : 0))};
		uint64_t now = lg_now_ms();
		if (now >= deadline)
			fail_msg("timed out waiting for a frame from the agent");
		r = poll(&pfd, 1, (int)(deadline - now));
		if (r < 0 && errno == EINTR)
			continue;
		assert_true(r >= 0);
		if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
			size_t room;
			uint8_t *dst = lg_reader_space(&c->rd, &room);
			ssize_t n = read(c->fd, dst, room);
			if (n > 0)
				lg_reader_commit(&c->rd, (size_t)n);
			else if (n == 0 || (errno != EAGAIN && errno != EINTR))
				c->eof = true;
		}
	}
}

/* ---- fields of a received frame ---- */

static bool field(const struct frame *f, uint16_t tag, struct lg_tlv *out)
{
	struct lg_tlv_iter it;
	struct lg_tlv t;

	lg_tlv_iter_init(&it, f->p, f->h.len);
	while (lg_tlv_next(&it, &t) == 1) {
		if (t.tag == tag) {
			*out = t;
			return true;
		}
	}
	return false;
}

static uint32_t field_u32(const struct frame *f, uint16_t tag, uint32_t def)
{
	struct lg_tlv t;
	uint32_t v;

	if (!field(f, tag, &t))
		return def;
	assert_int_equal(lg_tlv_u32(&t, &v), 0);
	return v;
}

static uint64_t field_u64(const struct frame *f, uint16_t tag, uint64_t def)
{
	struct lg_tlv t;
	uint64_t v;

	if (!field(f, tag, &t))
		return def;
	assert_int_equal(lg_tlv_u64(&t, &v), 0);
	return v;
}

/* The field as a new string ("" when absent). */
static char *field_str(const struct frame *f, uint16_t tag)
{
	struct lg_tlv t;
	char *s;

	if (!field(f, tag, &t))
		return xstrdup("");
	s = xmalloc(t.len + 1);
	memcpy(s, t.val, t.len);
	s[t.len] = '\0';
	return s;
}

/* ---- agent lifecycle ---- */

static struct conn *conn_start(void)
{
	struct conn *c = xzalloc(sizeof(*c));
	struct frame f;
	int sv[2];
	char *agent;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	c->pid = fork();
	assert_true(c->pid >= 0);
	if (c->pid == 0)
		exec_agent(sv[1]);
	close(sv[1]);
	c->fd = sv[0];
	lg_set_nonblock(c->fd, true);
	lg_reader_init(&c->rd);

	assert_int_equal(conn_next(c, &f), 1);
	assert_int_equal(f.h.type, LG_MSG_HELLO);
	assert_int_equal(f.h.id, 0);
	assert_int_equal(field_u32(&f, LG_TAG_VERSION, 0), LG_PROTO_VERSION);
	agent = field_str(&f, LG_TAG_AGENT);
	assert_true(strncmp(agent, "lg-agent ", 9) == 0);
	/* `lg-agent --fd` has no root file system to set up, hence nothing to report. */
	assert_int_equal(field_u32(&f, LG_TAG_ERRNO, UINT32_MAX), UINT32_MAX);
	free(agent);
	frame_free(&f);
	return c;
}

/* Waits for the agent process to end; asserts it exited 0, not by a signal. */
static void conn_wait_exit(struct conn *c)
{
	uint64_t deadline = lg_now_ms() + EXIT_TIMEOUT_MS;
	int st;

	for (;;) {
		pid_t p = waitpid(c->pid, &st, WNOHANG);
		assert_true(p >= 0);
		if (p == c->pid)
			break;
		if (lg_now_ms() >= deadline) {
			kill(c->pid, SIGKILL);
			waitpid(c->pid, &st, 0);
			fail_msg("the agent did not exit");
		}
		usleep(5000);
	}
	if (!WIFEXITED(st))
		fail_msg("the agent died of signal %d", WTERMSIG(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

static void conn_free(struct conn *c)
{
	close(c->fd);
	lg_reader_free(&c->rd);
	lg_buf_free(&c->out);
	free(c);
}

/* Closes our end; the agent must take that as the end of the session and exit 0. */
static void conn_stop(struct conn *c)
{
	shutdown(c->fd, SHUT_RDWR);
	conn_wait_exit(c);
	conn_free(c);
}

/*
 * valgrind takes a signal that arrives between fork and exec in its own
 * handler and loses it at execve; natively the kernel delivers it.
 */
static void skip_under_valgrind(void)
{
	const char *w = getenv("LG_TEST_AGENT_WRAPPER");

	if (w != NULL && strstr(w, "valgrind") != NULL)
		skip();
}

/* ---- requests ---- */

struct req {
	struct conn *c;
	size_t start;
};

static struct req req_begin(struct conn *c, uint16_t type, uint32_t id)
{
	return (struct req){c, lg_frame_begin(&c->out, type, id)};
}

static void req_send(struct req *r)
{
	assert_int_equal(lg_frame_end(&r->c->out, r->start), 0);
	conn_flush(r->c);
}

/* Waits for the RESULT of `id`; no other frame may come first. */
static void expect_result(struct conn *c, uint32_t id, struct frame *f)
{
	assert_int_equal(conn_next(c, f), 1);
	if (f->h.type != LG_MSG_RESULT || f->h.id != id)
		fail_msg("want RESULT for id %u, got %s for id %u", id, lg_msg_name(f->h.type),
			 f->h.id);
}

/* Expects RESULT with this errno for `id`; returns its MESSAGE (caller frees). */
static char *expect_errno(struct conn *c, uint32_t id, uint32_t want)
{
	struct frame f;
	char *msg;

	expect_result(c, id, &f);
	msg = field_str(&f, LG_TAG_MESSAGE);
	if (field_u32(&f, LG_TAG_ERRNO, 9999) != want)
		fail_msg("id %u: want errno %u, got %u (%s)", id, want,
			 field_u32(&f, LG_TAG_ERRNO, 9999), msg);
	frame_free(&f);
	return msg;
}

static void expect_ok(struct conn *c, uint32_t id)
{
	free(expect_errno(c, id, 0));
}

static void ping(struct conn *c, uint32_t id)
{
	struct req r = req_begin(c, LG_MSG_PING, id);
	req_send(&r);
	expect_ok(c, id);
}

/* ---- exec ---- */

struct exec_opts {
	const char *const *argv;
	const char *const *env;
	const char *cwd;
	const char *user;
	uint32_t timeout_ms;
	bool use_stdin;
	const void *in;
	size_t in_len;
};

struct exec_res {
	bool refused; /* answered by RESULT instead of EXIT */
	uint32_t err;
	char *msg;
	uint32_t exit_code; /* UINT32_MAX if absent */
	uint32_t sig;	    /* 0 if absent */
	uint32_t timed_out;
	struct lg_buf out, errb;
};

static void exec_res_free(struct exec_res *r)
{
	free(r->msg);
	lg_buf_free(&r->out);
	lg_buf_free(&r->errb);
}

static void exec_send(struct conn *c, uint32_t id, const struct exec_opts *o)
{
	struct req r = req_begin(c, LG_MSG_EXEC, id);
	const uint8_t *in = o->in;

	for (size_t i = 0; o->argv[i] != NULL; i++)
		lg_tlv_put_str(&c->out, LG_TAG_ARGV, o->argv[i]);
	for (size_t i = 0; o->env != NULL && o->env[i] != NULL; i++)
		lg_tlv_put_str(&c->out, LG_TAG_ENV, o->env[i]);
	if (o->cwd != NULL)
		lg_tlv_put_str(&c->out, LG_TAG_CWD, o->cwd);
	if (o->user != NULL)
		lg_tlv_put_str(&c->out, LG_TAG_USER, o->user);
	lg_tlv_put_u32(&c->out, LG_TAG_TIMEOUT_MS, o->timeout_ms);
	lg_tlv_put_u32(&c->out, LG_TAG_FLAGS, o->use_stdin ? LG_EXEC_STDIN : 0);
	req_send(&r);
	if (!o->use_stdin)
		return;
	c->feed = (struct feed){.active = true, .id = id, .p = in, .len = o->in_len};
	feed_pump(c);
}

/* Fills r from one frame of exec `id`; true once the exec is over. */
static bool exec_absorb(const struct frame *f, struct exec_res *r)
{
	switch (f->h.type) {
	case LG_MSG_STDOUT:
		lg_buf_append(&r->out, f->p, f->h.len);
		return false;
	case LG_MSG_STDERR:
		lg_buf_append(&r->errb, f->p, f->h.len);
		return false;
	case LG_MSG_EXIT:
		r->exit_code = field_u32(f, LG_TAG_EXIT_CODE, UINT32_MAX);
		r->sig = field_u32(f, LG_TAG_SIGNAL, 0);
		r->timed_out = field_u32(f, LG_TAG_TIMED_OUT, 9999);
		r->err = field_u32(f, LG_TAG_ERRNO, 9999);
		r->msg = field_str(f, LG_TAG_MESSAGE);
		assert_true(r->timed_out <= 1);
		return true;
	case LG_MSG_RESULT:
		r->refused = true;
		r->err = field_u32(f, LG_TAG_ERRNO, 9999);
		r->msg = field_str(f, LG_TAG_MESSAGE);
		return true;
	default:
		fail_msg("unexpected %s during exec", lg_msg_name(f->h.type));
		return true;
	}
}

static void exec_collect(struct conn *c, uint32_t id, struct exec_res *r)
{
	for (;;) {
		struct frame f;
		bool done;

		if (conn_next(c, &f) != 1)
			fail_msg("the agent closed the stream during exec %u", id);
		if (f.h.id != id)
			fail_msg("frame %s for id %u during exec %u", lg_msg_name(f.h.type), f.h.id,
				 id);
		done = exec_absorb(&f, r);
		frame_free(&f);
		if (done)
			return;
	}
}

static void run(struct conn *c, uint32_t id, const struct exec_opts *o, struct exec_res *r)
{
	memset(r, 0, sizeof(*r));
	exec_send(c, id, o);
	exec_collect(c, id, r);
}

static void assert_output(const struct lg_buf *b, const char *want)
{
	size_t n = strlen(want);

	if (lg_buf_pending(b) != n || (n > 0 && memcmp(lg_buf_head(b), want, n) != 0))
		fail_msg("output: want \"%s\", got \"%.*s\"", want, (int)lg_buf_pending(b),
			 (const char *)lg_buf_head(b));
}

#define ARGV(...) ((const char *const[]){__VA_ARGS__, NULL})

/* ---- tests: basics ---- */

static void test_hello_and_ping(void **state)
{
	struct conn *c = conn_start();

	ping(c, 1);
	ping(c, 2);
	conn_stop(c);
}

static void test_exec_echo(void **state)
{
	struct conn *c = conn_start();
	struct exec_res r;

	run(c, 1, &(struct exec_opts){.argv = ARGV("echo", "hi")}, &r);
	assert_false(r.refused);
	assert_int_equal(r.exit_code, 0);
	assert_int_equal(r.sig, 0);
	assert_int_equal(r.timed_out, 0);
	assert_int_equal(r.err, 0);
	assert_output(&r.out, "hi\n");
	assert_output(&r.errb, "");
	exec_res_free(&r);
	conn_stop(c);
}

static void test_exec_exit_code_and_stderr(void **state)
{
	struct conn *c = conn_start();
	struct exec_res r;

	run(c, 1, &(struct exec_opts){.argv = ARGV("sh", "-c", "exit 7")}, &r);
	assert_int_equal(r.exit_code, 7);
	exec_res_free(&r);

	run(c, 2, &(struct exec_opts){.argv = ARGV("sh", "-c", "echo out; echo err >&2; exit 3")},
	    &r);
	assert_int_equal(r.exit_code, 3);
	assert_output(&r.out, "out\n");
	assert_output(&r.errb, "err\n");
	exec_res_free(&r);
	conn_stop(c);
}

static void test_exec_not_found(void **state)
{
	struct conn *c = conn_start();
	char dir[] = "/tmp/lg-agent-test-XXXXXX";
	char *noexec;
	struct exec_res r;

	run(c, 1, &(struct exec_opts){.argv = ARGV("lg-no-such-command-xyz", "a")}, &r);
	assert_false(r.refused);
	assert_int_equal(r.exit_code, 127);
	assert_int_equal(r.err, 0); /* like a shell: the command ran and failed */
	assert_output(&r.errb, "lg-agent: lg-no-such-command-xyz: command not found\n");
	assert_output(&r.out, "");
	exec_res_free(&r);

	/* Not executable: 126 and why. */
	assert_non_null(mkdtemp(dir));
	noexec = xasprintf("%s/noexec", dir);
	close(open(noexec, O_CREAT | O_WRONLY, 0644));
	run(c, 2, &(struct exec_opts){.argv = ARGV(noexec)}, &r);
	assert_int_equal(r.exit_code, 126);
	assert_non_null(
	    memmem(lg_buf_head(&r.errb), lg_buf_pending(&r.errb), "Permission denied", 17));
	exec_res_free(&r);

	/* ENV's PATH is the one the command is looked up in. */
	run(c, 3,
	    &(struct exec_opts){.argv = ARGV("sh", "-c", "true"), .env = ARGV("PATH=/nonexistent")},
	    &r);
	assert_int_equal(r.exit_code, 127);
	exec_res_free(&r);

	unlink(noexec);
	rmdir(dir);
	free(noexec);
	conn_stop(c);
}

static void test_exec_env_cwd(void **state)
{
	struct conn *c = conn_start();
	struct exec_res r;

	run(c, 1,
	    &(struct exec_opts){.argv = ARGV("sh", "-c", "echo \"$LG_FOO:$HOME\"; pwd"),
				.env = ARGV("LG_FOO=bar", "HOME=/custom", "LG_FOO=baz"),
				.cwd = "/tmp"},
	    &r);
	assert_int_equal(r.exit_code, 0);
	assert_output(&r.out, "baz:/custom\n/tmp\n");
	exec_res_free(&r);

	/* A cwd that does not exist: the command never ran, EXIT says why. */
	run(c, 2, &(struct exec_opts){.argv = ARGV("true"), .cwd = "/nonexistent/dir"}, &r);
	assert_false(r.refused);
	assert_int_equal(r.err, ENOENT);
	assert_non_null(strstr(r.msg, "chdir /nonexistent/dir"));
	exec_res_free(&r);

	/* ENV without '=' is refused before anything runs. */
	run(c, 3, &(struct exec_opts){.argv = ARGV("true"), .env = ARGV("JUSTAKEY")}, &r);
	assert_true(r.refused);
	assert_int_equal(r.err, EINVAL);
	exec_res_free(&r);
	conn_stop(c);
}

static uint64_t cap_field(const struct lg_buf *status, const char *name);

/* The ids, environment and directory a command as `user` gets. */
#define WHOAMI "id -u; id -g; id -G; echo \"$HOME:$USER:$LOGNAME\"; pwd"

static void run_as(struct conn *c, uint32_t id, const char *user, const char *const *env,
		   const char *cwd, struct exec_res *r)
{
	run(c, id,
	    &(struct exec_opts){
		.argv = ARGV("sh", "-c", WHOAMI), .env = env, .cwd = cwd, .user = user},
	    r);
}

/*
 * EXEC's USER against this host's /etc/passwd (the agent reads the files
 * of its root, here the host's).  Switching ids needs root: as another
 * user only the refusals are checked.
 */
static void test_exec_user(void **state)
{
	struct conn *c = conn_start();
	char dir[] = "/tmp/lg-agent-user-XXXXXX";
	struct stat st;
	struct exec_res r;
	char *path;

	/* An unknown name: the command never ran, one line says why. */
	run_as(c, 1, "lg-no-such-user", NULL, NULL, &r);
	assert_false(r.refused);
	assert_int_equal(r.err, ENOENT);
	assert_string_equal(r.msg, "no user 'lg-no-such-user' in /etc/passwd");
	assert_output(&r.out, "");
	exec_res_free(&r);
	run_as(c, 2, "a:b", NULL, NULL, &r);
	assert_int_equal(r.err, EINVAL);
	assert_non_null(strstr(r.msg, "bad user"));
	exec_res_free(&r);

	if (geteuid() != 0) {
		/* The agent cannot give its ids away: EXIT says so, nothing ran. */
		run_as(c, 3, "nobody", NULL, NULL, &r);
		assert_int_equal(r.err, EPERM);
		assert_non_null(strstr(r.msg, "nobody"));
		exec_res_free(&r);
		conn_stop(c);
		skip();
	}

	/* By name: ids, groups, HOME/USER/LOGNAME from passwd; a missing home means "/". */
	run_as(c, 3, "nobody", NULL, NULL, &r);
	assert_int_equal(r.err, 0);
	assert_int_equal(r.exit_code, 0);
	assert_output(&r.out, "65534\n65534\n65534\n/nonexistent:nobody:nobody\n/\n");
	exec_res_free(&r);

	/* By uid, the same entry; EXEC's ENV and CWD still win. */
	run_as(c, 4, "65534", ARGV("HOME=/h", "LOGNAME=x"), "/tmp", &r);
	assert_int_equal(r.exit_code, 0);
	assert_output(&r.out, "65534\n65534\n65534\n/h:nobody:x\n/tmp\n");
	exec_res_free(&r);

	/* A uid without an entry: that uid and gid, no other group, home "/". */
	run_as(c, 5, "4242", NULL, NULL, &r);
	assert_int_equal(r.exit_code, 0);
	assert_output(&r.out, "4242\n4242\n4242\n/:4242:4242\n/\n");
	exec_res_free(&r);

	/* root by name starts in its home, which exists. */
	run_as(c, 6, "root", NULL, NULL, &r);
	assert_int_equal(r.exit_code, 0);
	assert_non_null(
	    memmem(lg_buf_head(&r.out), lg_buf_pending(&r.out), "0\n/root:root:root\n/root\n", 24));
	exec_res_free(&r);

	/* As nobody: no capability left, and what it writes is nobody's. */
	run(c, 7, &(struct exec_opts){.argv = ARGV("cat", "/proc/self/status"), .user = "nobody"},
	    &r);
	assert_int_equal(r.exit_code, 0);
	assert_int_equal(cap_field(&r.out, "CapEff:"), 0);
	assert_int_equal(cap_field(&r.out, "CapPrm:"), 0);
	exec_res_free(&r);
	assert_non_null(mkdtemp(dir));
	assert_int_equal(chmod(dir, 01777), 0);
	path = xasprintf("%s/f", dir);
	run(c, 8,
	    &(struct exec_opts){.argv = ARGV("sh", "-c", "echo x > f; cat /etc/shadow"),
				.cwd = dir,
				.user = "nobody"},
	    &r);
	assert_int_not_equal(r.exit_code, 0); /* shadow is not nobody's to read */
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_uid, 65534);
	assert_int_equal(st.st_gid, 65534);
	exec_res_free(&r);
	unlink(path);
	rmdir(dir);
	free(path);
	conn_stop(c);
}

static void test_exec_signal(void **state)
{
	struct conn *c = conn_start();
	struct exec_res r;

	run(c, 1, &(struct exec_opts){.argv = ARGV("sh", "-c", "kill -9 $$")}, &r);
	assert_int_equal(r.sig, 9);
	assert_int_equal(r.exit_code, UINT32_MAX);
	assert_int_equal(r.timed_out, 0);
	exec_res_free(&r);
	conn_stop(c);
}

static void test_exec_timeout(void **state)
{
	struct conn *c = conn_start();
	uint64_t t0 = lg_now_ms();
	struct exec_res r;

	/* The shell's child sleeps too: the whole group must die. */
	run(c, 1,
	    &(struct exec_opts){.argv = ARGV("sh", "-c", "sleep 10; echo no"), .timeout_ms = 300},
	    &r);
	assert_int_equal(r.timed_out, 1);
	assert_int_equal(r.sig, SIGKILL);
	assert_output(&r.out, "");
	assert_true(lg_now_ms() - t0 < 3000);
	exec_res_free(&r);
	conn_stop(c);
}

static void test_exec_stdin(void **state)
{
	struct conn *c = conn_start();
	size_t n = 1000 * 1000;
	uint8_t *data = xmalloc(n);
	struct exec_res r;

	srand(42);
	for (size_t i = 0; i < n; i++)
		data[i] = (uint8_t)rand();
	run(c, 1,
	    &(struct exec_opts){.argv = ARGV("cat"), .use_stdin = true, .in = data, .in_len = n},
	    &r);
	assert_int_equal(r.exit_code, 0);
	assert_int_equal(lg_buf_pending(&r.out), n);
	assert_memory_equal(lg_buf_head(&r.out), data, n);
	exec_res_free(&r);

	/* Empty stdin, and no stdin at all (/dev/null). */
	run(c, 2, &(struct exec_opts){.argv = ARGV("cat"), .use_stdin = true}, &r);
	assert_int_equal(r.exit_code, 0);
	assert_output(&r.out, "");
	exec_res_free(&r);
	run(c, 3, &(struct exec_opts){.argv = ARGV("cat")}, &r);
	assert_int_equal(r.exit_code, 0);
	assert_output(&r.out, "");
	exec_res_free(&r);

	/* A command that ignores its stdin still ends; the rest is dropped. */
	run(c, 4,
	    &(struct exec_opts){.argv = ARGV("true"), .use_stdin = true, .in = data, .in_len = n},
	    &r);
	assert_int_equal(r.exit_code, 0);
	exec_res_free(&r);
	free(data);
	ping(c, 5);
	conn_stop(c);
}

/* More than every buffer on the way holds: only backpressure gets this through. */
static void test_exec_stdin_backpressure(void **state)
{
	struct conn *c = conn_start();
	size_t n = 12 * 1000 * 1000;
	uint8_t *data = xmalloc(n);
	struct exec_res r;

	for (size_t i = 0; i < n; i++)
		data[i] = (uint8_t)(i * 7 + (i >> 13));
	run(c, 1,
	    &(struct exec_opts){.argv = ARGV("sh", "-c", "sleep 0.3; cat"),
				.use_stdin = true,
				.in = data,
				.in_len = n},
	    &r);
	assert_int_equal(r.exit_code, 0);
	assert_int_equal(lg_buf_pending(&r.out), n);
	assert_memory_equal(lg_buf_head(&r.out), data, n);
	exec_res_free(&r);
	free(data);
	conn_stop(c);
}

static void test_exec_large_output(void **state)
{
	struct conn *c = conn_start();
	struct exec_res r;
	size_t nonzero = 0;

	run(c, 1, &(struct exec_opts){.argv = ARGV("head", "-c", "5000000", "/dev/zero")}, &r);
	assert_int_equal(r.exit_code, 0);
	assert_int_equal(lg_buf_pending(&r.out), 5000000);
	for (size_t i = 0; i < lg_buf_pending(&r.out); i++)
		nonzero += lg_buf_head(&r.out)[i] != 0;
	assert_int_equal(nonzero, 0);
	exec_res_free(&r);
	conn_stop(c);
}

static void test_exec_concurrent(void **state)
{
	struct conn *c = conn_start();
	struct exec_res ra = {0}, rb = {0};
	bool a_done = false, b_done = false, b_before_a_exit = false;

	exec_send(
	    c, 10,
	    &(struct exec_opts){
		.argv = ARGV("sh", "-c", "for i in 1 2 3 4 5; do echo a$i; sleep 0.05; done")});
	exec_send(
	    c, 11,
	    &(struct exec_opts){
		.argv = ARGV("sh", "-c",
			     "for i in 1 2 3 4 5; do echo b$i >&2; sleep 0.05; done; exit 4")});
	while (!a_done || !b_done) {
		struct frame f;

		assert_int_equal(conn_next(c, &f), 1);
		if (f.h.id == 10) {
			a_done = exec_absorb(&f, &ra);
		} else if (f.h.id == 11) {
			if (!a_done)
				b_before_a_exit = true;
			b_done = exec_absorb(&f, &rb);
		} else {
			fail_msg("frame for unknown id %u", f.h.id);
		}
		frame_free(&f);
	}
	assert_true(b_before_a_exit);
	assert_int_equal(ra.exit_code, 0);
	assert_int_equal(rb.exit_code, 4);
	assert_output(&ra.out, "a1\na2\na3\na4\na5\n");
	assert_output(&rb.errb, "b1\nb2\nb3\nb4\nb5\n");
	assert_output(&rb.out, "");
	exec_res_free(&ra);
	exec_res_free(&rb);
	conn_stop(c);
}

/* A background grandchild holding stdout open must not hold up EXIT for long. */
static void test_exec_grandchild_holds_pipe(void **state)
{
	struct conn *c = conn_start();
	uint64_t t0 = lg_now_ms();
	struct exec_res r;

	run(c, 1, &(struct exec_opts){.argv = ARGV("sh", "-c", "sleep 3 & echo done")}, &r);
	assert_int_equal(r.exit_code, 0);
	assert_output(&r.out, "done\n");
	assert_true(lg_now_ms() - t0 < 2500);
	exec_res_free(&r);
	conn_stop(c);
}

static void test_kill(void **state)
{
	skip_under_valgrind();
	struct conn *c = conn_start();
	struct exec_res r = {0};
	bool got_result = false, got_exit = false;
	struct req q;

	exec_send(c, 5, &(struct exec_opts){.argv = ARGV("sleep", "10")});
	ping(c, 6); /* the exec is running by now */
	q = req_begin(c, LG_MSG_KILL, 5);
	lg_tlv_put_u32(&c->out, LG_TAG_SIGNAL, SIGTERM);
	req_send(&q);
	/* KILL's RESULT and the exec's EXIT share the id; they may come in either order. */
	while (!got_result || !got_exit) {
		struct frame f;

		assert_int_equal(conn_next(c, &f), 1);
		assert_int_equal(f.h.id, 5);
		if (f.h.type == LG_MSG_RESULT) {
			assert_int_equal(field_u32(&f, LG_TAG_ERRNO, 9999), 0);
			got_result = true;
		} else {
			got_exit = exec_absorb(&f, &r);
		}
		frame_free(&f);
	}
	if (r.sig != SIGTERM)
		fail_msg("want SIGTERM, got signal %u, exit code %u, errno %u (%s)", r.sig,
			 r.exit_code, r.err, r.msg);
	exec_res_free(&r);

	/* No such exec any more. */
	q = req_begin(c, LG_MSG_KILL, 5);
	req_send(&q);
	free(expect_errno(c, 5, ESRCH));
	conn_stop(c);
}

/* KILL right behind EXEC lands between fork and the child's setsid(): still delivered. */
static void test_kill_race(void **state)
{
	skip_under_valgrind();
	struct conn *c = conn_start();

	for (uint32_t id = 1; id <= 40; id++) {
		struct exec_res r = {0};
		bool got_result = false, got_exit = false;
		struct req q;

		exec_send(c, id, &(struct exec_opts){.argv = ARGV("sleep", "10")});
		q = req_begin(c, LG_MSG_KILL, id);
		lg_tlv_put_u32(&c->out, LG_TAG_SIGNAL, SIGTERM);
		req_send(&q);
		while (!got_result || !got_exit) {
			struct frame f;

			assert_int_equal(conn_next(c, &f), 1);
			assert_int_equal(f.h.id, id);
			if (f.h.type == LG_MSG_RESULT) {
				assert_int_equal(field_u32(&f, LG_TAG_ERRNO, 9999), 0);
				got_result = true;
			} else {
				got_exit = exec_absorb(&f, &r);
			}
			frame_free(&f);
		}
		if (r.sig != SIGTERM)
			fail_msg("round %u: want SIGTERM, got signal %u, exit code %u", id, r.sig,
				 r.exit_code);
		exec_res_free(&r);
	}
	conn_stop(c);
}

static void test_exec_limits(void **state)
{
	struct conn *c = conn_start();
	struct exec_res r;
	int exits = 0, results = 0;
	struct req q;

	for (uint32_t id = 100; id < 164; id++)
		exec_send(c, id, &(struct exec_opts){.argv = ARGV("sleep", "10")});
	ping(c, 1);
	run(c, 200, &(struct exec_opts){.argv = ARGV("true")}, &r);
	assert_true(r.refused);
	assert_int_equal(r.err, EAGAIN);
	exec_res_free(&r);

	/* An id that is still running cannot be reused. */
	run(c, 100, &(struct exec_opts){.argv = ARGV("true")}, &r);
	assert_true(r.refused);
	assert_int_equal(r.err, EEXIST);
	exec_res_free(&r);

	/* No ARGV at all. */
	q = req_begin(c, LG_MSG_EXEC, 201);
	req_send(&q);
	free(expect_errno(c, 201, EINVAL));

	for (uint32_t id = 100; id < 103; id++) {
		q = req_begin(c, LG_MSG_KILL, id);
		req_send(&q);
	}
	while (exits < 3 || results < 3) {
		struct frame f;

		assert_int_equal(conn_next(c, &f), 1);
		assert_true(f.h.id >= 100 && f.h.id < 103);
		if (f.h.type == LG_MSG_EXIT) {
			assert_int_equal(field_u32(&f, LG_TAG_SIGNAL, 0), SIGKILL);
			exits++;
		} else {
			assert_int_equal(f.h.type, LG_MSG_RESULT);
			results++;
		}
		frame_free(&f);
	}
	/* Slots are free again. */
	run(c, 202, &(struct exec_opts){.argv = ARGV("true")}, &r);
	assert_false(r.refused);
	assert_int_equal(r.exit_code, 0);
	exec_res_free(&r);
	/* Closing the stream kills the other 61 and the agent still exits cleanly. */
	conn_stop(c);
}

static void test_shutdown(void **state)
{
	struct conn *c = conn_start();
	struct frame f;
	struct req q;
	char stat_path[64], buf[512];
	long pid = 0;
	int fd;
	bool gone = false;

	/* Learn the pid of a long-running command, then shut down under it. */
	exec_send(c, 1, &(struct exec_opts){.argv = ARGV("sh", "-c", "echo $$; exec sleep 10")});
	assert_int_equal(conn_next(c, &f), 1);
	assert_int_equal(f.h.type, LG_MSG_STDOUT);
	pid = strtol((const char *)f.p, NULL, 10);
	frame_free(&f);
	assert_true(pid > 1);

	q = req_begin(c, LG_MSG_SHUTDOWN, 2);
	req_send(&q);
	expect_ok(c, 2);
	assert_int_equal(conn_next(c, &f), 0);
	conn_wait_exit(c);
	conn_free(c);

	snprintf(stat_path, sizeof(stat_path), "/proc/%ld/stat", pid);
	for (int i = 0; i < 200 && !gone; i++) {
		ssize_t n;

		fd = open(stat_path, O_RDONLY);
		if (fd < 0) {
			gone = true;
			break;
		}
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		buf[n > 0 ? n : 0] = '\0';
		/* "pid (comm) S ...": a zombie waiting for its new parent counts as gone. */
		char *rp = strrchr(buf, ')');
		if (rp != NULL && (rp[2] == 'Z' || rp[2] == 'X'))
			gone = true;
		else
			usleep(10000);
	}
	assert_true(gone);
}

static void test_stdin_for_unknown_id(void **state)
{
	struct conn *c = conn_start();

	lg_frame_data(&c->out, LG_MSG_STDIN, 77, "data", 4);
	lg_frame_data(&c->out, LG_MSG_STDIN, 77, NULL, 0);
	ping(c, 1); /* no answer to STDIN: the next frame is the PING's */
	conn_stop(c);
}

/* ---- tests: files ---- */

static char *tmpdir(void)
{
	char *d = xstrdup("/tmp/lg-agent-test-XXXXXX");
	assert_non_null(mkdtemp(d));
	return d;
}

static void rm_tree(const char *d)
{
	assert_int_equal(lg_rm_rf(d), 0);
}

static char *file_write(struct conn *c, uint32_t id, const char *path, const void *data, size_t n,
			uint32_t flags, int mode, uint64_t offset, uint32_t want_errno)
{
	struct req q = req_begin(c, LG_MSG_FILE_WRITE, id);

	lg_tlv_put_str(&c->out, LG_TAG_PATH, path);
	if (data != NULL)
		lg_tlv_put(&c->out, LG_TAG_DATA, data, n);
	if (flags != 0)
		lg_tlv_put_u32(&c->out, LG_TAG_FLAGS, flags);
	if (mode >= 0)
		lg_tlv_put_u32(&c->out, LG_TAG_MODE, (uint32_t)mode);
	if (offset != 0)
		lg_tlv_put_u64(&c->out, LG_TAG_OFFSET, offset);
	req_send(&q);
	return expect_errno(c, id, want_errno);
}

static void file_read(struct conn *c, uint32_t id, const char *path, uint64_t offset,
		      uint32_t length, struct frame *f)
{
	struct req q = req_begin(c, LG_MSG_FILE_READ, id);

	lg_tlv_put_str(&c->out, LG_TAG_PATH, path);
	if (offset != 0)
		lg_tlv_put_u64(&c->out, LG_TAG_OFFSET, offset);
	if (length != 0)
		lg_tlv_put_u32(&c->out, LG_TAG_LENGTH, length);
	req_send(&q);
	expect_result(c, id, f);
}

static void test_file_write_read(void **state)
{
	struct conn *c = conn_start();
	char *d = tmpdir();
	char *p = xasprintf("%s/a.txt", d);
	char *deep = xasprintf("%s/x/y/z.txt", d);
	char *msg;
	struct frame f;
	struct lg_tlv t;
	struct stat st;

	free(file_write(c, 1, p, "hello", 5, LG_WRITE_TRUNC, -1, 0, 0));
	file_read(c, 2, p, 0, 0, &f);
	assert_int_equal(field_u32(&f, LG_TAG_ERRNO, 9999), 0);
	assert_true(field(&f, LG_TAG_DATA, &t));
	assert_int_equal(t.len, 5);
	assert_memory_equal(t.val, "hello", 5);
	assert_int_equal(field_u64(&f, LG_TAG_SIZE, 0), 5);
	assert_int_equal(field_u32(&f, LG_TAG_FLAGS, 0), LG_READ_EOF);
	frame_free(&f);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644);

	/* Write at an offset (leaving a hole), then append. */
	free(file_write(c, 3, p, "world", 5, 0, -1, 10, 0));
	free(file_write(c, 4, p, "XY", 2, LG_WRITE_APPEND, -1, 0, 0));
	file_read(c, 5, p, 3, 4, &f);
	assert_true(field(&f, LG_TAG_DATA, &t));
	assert_int_equal(t.len, 4);
	assert_memory_equal(t.val, "lo\0\0", 4);
	assert_int_equal(field_u64(&f, LG_TAG_SIZE, 0), 17);
	assert_int_equal(field_u32(&f, LG_TAG_FLAGS, 0), 0);
	frame_free(&f);
	file_read(c, 6, p, 10, 100, &f);
	assert_true(field(&f, LG_TAG_DATA, &t));
	assert_int_equal(t.len, 7);
	assert_memory_equal(t.val, "worldXY", 7);
	assert_int_equal(field_u32(&f, LG_TAG_FLAGS, 0), LG_READ_EOF);
	frame_free(&f);

	/* An explicit MODE is applied exactly, also to an existing file. */
	free(file_write(c, 7, p, "", 0, LG_WRITE_TRUNC, 0600, 0, 0));
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(st.st_size, 0);

	/* Parents: missing without MKDIRS, created with it. */
	msg = file_write(c, 8, deep, "z", 1, 0, -1, 0, ENOENT);
	assert_non_null(strstr(msg, deep));
	free(msg);
	free(file_write(c, 9, deep, "z", 1, LG_WRITE_MKDIRS, -1, 0, 0));
	assert_int_equal(stat(deep, &st), 0);

	/* Errors name the path and say why. */
	file_read(c, 10, "/nonexistent/lg-file", 0, 0, &f);
	assert_int_equal(field_u32(&f, LG_TAG_ERRNO, 0), ENOENT);
	msg = field_str(&f, LG_TAG_MESSAGE);
	assert_string_equal(msg, "open /nonexistent/lg-file: No such file or directory");
	free(msg);
	frame_free(&f);
	file_read(c, 11, d, 0, 0, &f);
	assert_int_equal(field_u32(&f, LG_TAG_ERRNO, 0), EISDIR);
	frame_free(&f);
	free(file_write(c, 12, "", "x", 1, 0, -1, 0, ENOENT));

	rm_tree(d);
	free(p);
	free(deep);
	free(d);
	conn_stop(c);
}

/* A file larger than one frame, written and read back in pieces. */
static void test_file_large(void **state)
{
	struct conn *c = conn_start();
	char *d = tmpdir();
	char *p = xasprintf("%s/big", d);
	size_t n = 3 * 1000 * 1000, chunk = 900 * 1000, got = 0;
	uint8_t *data = xmalloc(n);
	uint32_t id = 1;

	for (size_t i = 0; i < n; i++)
		data[i] = (uint8_t)(i * 31 + (i >> 11));
	for (size_t off = 0; off < n; off += chunk) {
		size_t len = n - off < chunk ? n - off : chunk;
		free(file_write(c, id++, p, data + off, len, off == 0 ? LG_WRITE_TRUNC : 0, -1, off,
				0));
	}
	for (;;) {
		struct frame f;
		struct lg_tlv t = {0};
		uint32_t flags;

		/* No LENGTH: the agent's cap, just under one frame. */
		file_read(c, id++, p, got, 0, &f);
		assert_true(field(&f, LG_TAG_DATA, &t));
		assert_true(t.len <= LG_FRAME_MAX_PAYLOAD - 1024);
		assert_true(got + t.len <= n);
		assert_memory_equal(t.val, data + got, t.len);
		got += t.len;
		flags = field_u32(&f, LG_TAG_FLAGS, 0);
		frame_free(&f);
		if (flags & LG_READ_EOF)
			break;
	}
	assert_int_equal(got, n);
	rm_tree(d);
	free(data);
	free(p);
	free(d);
	conn_stop(c);
}

static void test_list_dir_and_stat(void **state)
{
	struct conn *c = conn_start();
	char *d = tmpdir();
	char *f1 = xasprintf("%s/file", d), *sub = xasprintf("%s/sub", d);
	char *ln = xasprintf("%s/link", d);
	bool seen_file = false, seen_sub = false, seen_link = false;
	struct lg_tlv_iter it;
	struct lg_tlv t;
	struct frame f;
	struct req q;
	int fd;

	fd = open(f1, O_CREAT | O_WRONLY, 0640);
	assert_int_equal(write(fd, "12345", 5), 5);
	close(fd);
	chmod(f1, 0640);
	assert_int_equal(mkdir(sub, 0750), 0);
	chmod(sub, 0750);
	assert_int_equal(symlink("/nonexistent-target", ln), 0);

	q = req_begin(c, LG_MSG_LIST_DIR, 1);
	lg_tlv_put_str(&c->out, LG_TAG_PATH, d);
	req_send(&q);
	expect_result(c, 1, &f);
	assert_int_equal(field_u32(&f, LG_TAG_ERRNO, 9999), 0);
	assert_false(field(&f, LG_TAG_MESSAGE, &t));
	lg_tlv_iter_init(&it, f.p, f.h.len);
	while (lg_tlv_next(&it, &t) == 1) {
		uint32_t ftype, mode;
		uint64_t size;
		char name[256];

		if (t.tag != LG_TAG_DIRENT)
			continue;
		assert_true(t.len > LG_DIRENT_FIXED && t.len - LG_DIRENT_FIXED < sizeof(name));
		memcpy(&ftype, t.val, 4); /* little-endian host */
		memcpy(&mode, t.val + 4, 4);
		memcpy(&size, t.val + 8, 8);
		memcpy(name, t.val + LG_DIRENT_FIXED, t.len - LG_DIRENT_FIXED);
		name[t.len - LG_DIRENT_FIXED] = '\0';
		if (strcmp(name, "file") == 0) {
			assert_int_equal(ftype, LG_FTYPE_FILE);
			assert_int_equal(mode, 0640);
			assert_int_equal(size, 5);
			seen_file = true;
		} else if (strcmp(name, "sub") == 0) {
			assert_int_equal(ftype, LG_FTYPE_DIR);
			assert_int_equal(mode, 0750);
			seen_sub = true;
		} else if (strcmp(name, "link") == 0) {
			assert_int_equal(ftype, LG_FTYPE_SYMLINK);
			seen_link = true;
		} else {
			fail_msg("unexpected entry %s", name);
		}
	}
	frame_free(&f);
	assert_true(seen_file && seen_sub && seen_link);

	q = req_begin(c, LG_MSG_STAT, 2);
	lg_tlv_put_str(&c->out, LG_TAG_PATH, f1);
	req_send(&q);
	expect_result(c, 2, &f);
	assert_int_equal(field_u32(&f, LG_TAG_ERRNO, 9999), 0);
	assert_int_equal(field_u32(&f, LG_TAG_FTYPE, 99), LG_FTYPE_FILE);
	assert_int_equal(field_u32(&f, LG_TAG_MODE, 0), 0640);
	assert_int_equal(field_u64(&f, LG_TAG_SIZE, 0), 5);
	assert_true(field_u64(&f, LG_TAG_MTIME, 0) > 1600000000u);
	frame_free(&f);

	/* lstat: the dangling link itself. */
	q = req_begin(c, LG_MSG_STAT, 3);
	lg_tlv_put_str(&c->out, LG_TAG_PATH, ln);
	req_send(&q);
	expect_result(c, 3, &f);
	assert_int_equal(field_u32(&f, LG_TAG_FTYPE, 99), LG_FTYPE_SYMLINK);
	frame_free(&f);

	q = req_begin(c, LG_MSG_STAT, 4);
	lg_tlv_put_str(&c->out, LG_TAG_PATH, "/nonexistent/x");
	req_send(&q);
	free(expect_errno(c, 4, ENOENT));

	q = req_begin(c, LG_MSG_LIST_DIR, 5);
	lg_tlv_put_str(&c->out, LG_TAG_PATH, f1);
	req_send(&q);
	free(expect_errno(c, 5, ENOTDIR));

	rm_tree(d);
	free(f1);
	free(sub);
	free(ln);
	free(d);
	conn_stop(c);
}

/* More entries than one frame holds: what fits, ERRNO 0, MESSAGE "truncated". */
static void test_list_dir_truncated(void **state)
{
	struct conn *c = conn_start();
	char *d = tmpdir();
	char name[300];
	struct lg_tlv_iter it;
	struct lg_tlv t;
	struct frame f;
	struct req q;
	size_t count = 0;
	char *msg;

	for (int i = 0; i < 5500; i++) {
		snprintf(name, sizeof(name), "%s/%0200d", d, i);
		close(open(name, O_CREAT | O_WRONLY, 0644));
	}
	q = req_begin(c, LG_MSG_LIST_DIR, 1);
	lg_tlv_put_str(&c->out, LG_TAG_PATH, d);
	req_send(&q);
	expect_result(c, 1, &f);
	assert_true(f.h.len <= LG_FRAME_MAX_PAYLOAD);
	assert_int_equal(field_u32(&f, LG_TAG_ERRNO, 9999), 0);
	msg = field_str(&f, LG_TAG_MESSAGE);
	assert_string_equal(msg, "truncated");
	free(msg);
	lg_tlv_iter_init(&it, f.p, f.h.len);
	while (lg_tlv_next(&it, &t) == 1)
		count += t.tag == LG_TAG_DIRENT;
	assert_true(count > 4000 && count < 5500);
	frame_free(&f);
	rm_tree(d);
	free(d);
	conn_stop(c);
}

static void simple_path_req(struct conn *c, uint16_t type, uint32_t id, const char *path,
			    uint32_t flags, int mode, uint32_t want_errno)
{
	struct req q = req_begin(c, type, id);

	lg_tlv_put_str(&c->out, LG_TAG_PATH, path);
	if (flags != 0)
		lg_tlv_put_u32(&c->out, LG_TAG_FLAGS, flags);
	if (mode >= 0)
		lg_tlv_put_u32(&c->out, LG_TAG_MODE, (uint32_t)mode);
	req_send(&q);
	free(expect_errno(c, id, want_errno));
}

static void test_mkdir_remove(void **state)
{
	struct conn *c = conn_start();
	char *d = tmpdir();
	char *a = xasprintf("%s/a", d), *deep = xasprintf("%s/b/c/d", d);
	char *file = xasprintf("%s/b/c/d/f", d), *ln = xasprintf("%s/b/link", d);
	char *outside = tmpdir();
	char *precious = xasprintf("%s/precious", outside);
	struct stat st;

	simple_path_req(c, LG_MSG_MKDIR, 1, a, 0, 0700, 0);
	assert_int_equal(stat(a, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0700);
	simple_path_req(c, LG_MSG_MKDIR, 2, a, 0, -1, EEXIST);
	simple_path_req(c, LG_MSG_MKDIR, 3, a, LG_MKDIR_PARENTS, -1, 0);
	simple_path_req(c, LG_MSG_MKDIR, 4, deep, 0, -1, ENOENT);
	simple_path_req(c, LG_MSG_MKDIR, 5, deep, LG_MKDIR_PARENTS, -1, 0);
	assert_int_equal(stat(deep, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0755 & ~0022);

	/* mkdir -p over a file is still an error. */
	close(open(file, O_CREAT | O_WRONLY, 0644));
	simple_path_req(c, LG_MSG_MKDIR, 6, file, LG_MKDIR_PARENTS, -1, EEXIST);

	/* Recursive remove must not follow a symlink out of the tree. */
	close(open(precious, O_CREAT | O_WRONLY, 0644));
	assert_int_equal(symlink(outside, ln), 0);
	simple_path_req(c, LG_MSG_REMOVE, 7, file, 0, -1, 0);
	assert_int_not_equal(access(file, F_OK), 0);
	simple_path_req(c, LG_MSG_REMOVE, 8, a, 0, -1, 0);
	simple_path_req(c, LG_MSG_REMOVE, 9, deep, 0, -1, 0);
	char *b = xasprintf("%s/b", d);
	simple_path_req(c, LG_MSG_REMOVE, 10, b, 0, -1, ENOTEMPTY);
	simple_path_req(c, LG_MSG_REMOVE, 11, b, LG_REMOVE_RECURSIVE, -1, 0);
	assert_int_not_equal(access(b, F_OK), 0);
	assert_int_equal(access(precious, F_OK), 0);
	simple_path_req(c, LG_MSG_REMOVE, 12, b, LG_REMOVE_RECURSIVE, -1, ENOENT);

	/* A symlink to a directory is removed itself, even recursively. */
	free(ln);
	ln = xasprintf("%s/link2", d);
	assert_int_equal(symlink(outside, ln), 0);
	simple_path_req(c, LG_MSG_REMOVE, 13, ln, LG_REMOVE_RECURSIVE, -1, 0);
	assert_int_equal(access(precious, F_OK), 0);

	rm_tree(d);
	rm_tree(outside);
	free(a);
	free(b);
	free(deep);
	free(file);
	free(ln);
	free(precious);
	free(outside);
	free(d);
	conn_stop(c);
}

/* ---- tests: a host that breaks the protocol ---- */

static void raw_header(struct conn *c, uint32_t len, uint16_t type, uint16_t flags, uint32_t id)
{
	struct lg_frame_hdr h = {.len = len, .type = type, .flags = flags, .id = id};
	uint8_t raw[LG_FRAME_HDR_SIZE];

	lg_frame_hdr_encode(raw, &h);
	lg_buf_append(&c->out, raw, sizeof(raw));
	conn_flush(c);
}

/* After a bad header: a final RESULT on id 0, then the stream ends and the agent exits 0. */
static void expect_fatal(struct conn *c)
{
	struct frame f;
	char *msg;

	expect_result(c, 0, &f);
	assert_int_equal(field_u32(&f, LG_TAG_ERRNO, 0), EPROTO);
	msg = field_str(&f, LG_TAG_MESSAGE);
	assert_non_null(strstr(msg, "frame header"));
	free(msg);
	frame_free(&f);
	assert_int_equal(conn_next(c, &f), 0);
	conn_wait_exit(c);
	conn_free(c);
}

static void test_garbage_header(void **state)
{
	struct conn *c = conn_start();

	ping(c, 1);
	raw_header(c, 16, 0xffff, 0, 5);
	lg_buf_append(&c->out, "0123456789abcdef", 16);
	conn_flush(c);
	expect_fatal(c);

	c = conn_start();
	raw_header(c, 0, LG_MSG_PING, 1, 5); /* reserved flags */
	expect_fatal(c);

	c = conn_start();
	lg_buf_append(&c->out, "GET / HTTP/1.1\r\n\r\n", 18);
	conn_flush(c);
	expect_fatal(c);
}

static void test_oversize_header(void **state)
{
	struct conn *c = conn_start();

	/* The agent must judge the header alone, not wait for 4 GiB of payload. */
	raw_header(c, LG_FRAME_MAX_PAYLOAD + 1, LG_MSG_FILE_WRITE, 0, 3);
	expect_fatal(c);

	c = conn_start();
	raw_header(c, UINT32_MAX, LG_MSG_EXEC, 0, 3);
	expect_fatal(c);
}

static void test_bad_tlv_keeps_serving(void **state)
{
	struct conn *c = conn_start();
	struct req q;
	char *msg;

	/* A field claiming more bytes than the frame has. */
	q = req_begin(c, LG_MSG_EXEC, 1);
	lg_tlv_put_str(&c->out, LG_TAG_ARGV, "echo");
	lg_buf_append(&c->out, "\x03\x00\x64\x00\x00\x00xyz", 9);
	req_send(&q);
	msg = expect_errno(c, 1, EPROTO);
	assert_non_null(strstr(msg, "EXEC"));
	free(msg);

	/* A trailing partial field header. */
	q = req_begin(c, LG_MSG_STAT, 2);
	lg_buf_append(&c->out, "\x0d\x00", 2);
	req_send(&q);
	free(expect_errno(c, 2, EPROTO));

	/* A NUL inside an argv string: no silent truncation. */
	q = req_begin(c, LG_MSG_EXEC, 3);
	lg_tlv_put(&c->out, LG_TAG_ARGV, "ec\0ho", 5);
	req_send(&q);
	free(expect_errno(c, 3, EPROTO));

	/* A u32 field of the wrong length. */
	q = req_begin(c, LG_MSG_EXEC, 4);
	lg_tlv_put_str(&c->out, LG_TAG_ARGV, "true");
	lg_tlv_put(&c->out, LG_TAG_TIMEOUT_MS, "\x01\x02", 2);
	req_send(&q);
	free(expect_errno(c, 4, EPROTO));

	/* Tag 0 is malformed; an unknown tag from a newer host is skipped. */
	q = req_begin(c, LG_MSG_PING, 5);
	lg_tlv_put(&c->out, 0, "x", 1);
	req_send(&q);
	free(expect_errno(c, 5, EPROTO));
	q = req_begin(c, LG_MSG_PING, 6);
	lg_tlv_put(&c->out, 999, "future", 6);
	req_send(&q);
	expect_ok(c, 6);

	/* Messages only the agent sends. */
	q = req_begin(c, LG_MSG_STDOUT, 7);
	req_send(&q);
	free(expect_errno(c, 7, EPROTO));
	q = req_begin(c, LG_MSG_RESULT, 8);
	lg_tlv_put_u32(&c->out, LG_TAG_ERRNO, 0);
	req_send(&q);
	free(expect_errno(c, 8, EPROTO));
	q = req_begin(c, LG_MSG_HELLO, 9);
	req_send(&q);
	free(expect_errno(c, 9, EPROTO));

	ping(c, 10);
	conn_stop(c);
}

/* Bytes cut off in the middle of a frame are just the host going away. */
static void test_eof_mid_frame(void **state)
{
	struct conn *c = conn_start();

	raw_header(c, 100, LG_MSG_FILE_WRITE, 0, 1);
	lg_buf_append(&c->out, "partial", 7);
	conn_flush(c);
	conn_stop(c);
}

/* ---- tests: stdin credit (protocol 2) ---- */

static uint8_t *pattern(size_t n, unsigned seed)
{
	uint8_t *d = xmalloc(n);

	for (size_t i = 0; i < n; i++)
		d[i] = (uint8_t)(i * 7 + (i >> 13) + seed);
	return d;
}

/*
 * A command that never reads its stdin: the host's window fills, and the
 * agent still reads the port, so a PING is answered and a KILL ends the
 * exec at once.  (Before stdin credit the agent stopped reading the port
 * for such a command, and the KILL queued behind the stdin.)
 */
static void test_stdin_blocked_kill(void **state)
{
	skip_under_valgrind();
	struct conn *c = conn_start();
	size_t n = 8u << 20;
	uint8_t *data = pattern(n, 1);
	struct exec_res r = {0};
	bool got_result = false, got_exit = false;
	uint64_t t0;
	struct req q;

	exec_send(c, 1,
		  &(struct exec_opts){
		      .argv = ARGV("sleep", "100"), .use_stdin = true, .in = data, .in_len = n});
	ping(c, 2);
	/* The pipe holds 64 KiB at most: the rest of the window stays queued in the agent. */
	usleep(200 * 1000);
	ping(c, 3);
	assert_true(c->feed.off < n);
	assert_true(c->feed.acked <= 1u << 20);
	t0 = lg_now_ms();
	q = req_begin(c, LG_MSG_KILL, 1);
	req_send(&q);
	while (!got_result || !got_exit) {
		struct frame f;

		assert_int_equal(conn_next(c, &f), 1);
		assert_int_equal(f.h.id, 1);
		if (f.h.type == LG_MSG_RESULT) {
			assert_int_equal(field_u32(&f, LG_TAG_ERRNO, 9999), 0);
			got_result = true;
		} else {
			got_exit = exec_absorb(&f, &r);
		}
		frame_free(&f);
	}
	assert_int_equal(r.sig, SIGKILL);
	assert_true(lg_now_ms() - t0 < 2000);
	exec_res_free(&r);
	free(data);
	ping(c, 4);
	conn_stop(c);
}

/* Large stdin and large output at once, through the window. */
static void test_stdin_window_with_output(void **state)
{
	struct conn *c = conn_start();
	size_t n = 8u << 20;
	uint8_t *data = pattern(n, 2);
	struct exec_res r;

	run(c, 1,
	    &(struct exec_opts){.argv = ARGV("sh", "-c", "cat; head -c 3000000 /dev/zero >&2"),
				.use_stdin = true,
				.in = data,
				.in_len = n},
	    &r);
	assert_int_equal(r.exit_code, 0);
	assert_int_equal(lg_buf_pending(&r.out), n);
	assert_memory_equal(lg_buf_head(&r.out), data, n);
	assert_int_equal(lg_buf_pending(&r.errb), 3000000);
	assert_int_equal(c->feed.acked, n);
	assert_int_equal(c->feed.inflight, 0);
	exec_res_free(&r);
	free(data);
	conn_stop(c);
}

/* After a broken stream rule: a final RESULT on id 0 saying so, then the end. */
static void expect_violation(struct conn *c, const char *what)
{
	for (;;) {
		struct frame f;
		char *msg;

		assert_int_equal(conn_next(c, &f), 1);
		if (f.h.id != 0) { /* output or ACKs of the exec before the violation */
			frame_free(&f);
			continue;
		}
		assert_int_equal(f.h.type, LG_MSG_RESULT);
		assert_int_equal(field_u32(&f, LG_TAG_ERRNO, 0), EPROTO);
		msg = field_str(&f, LG_TAG_MESSAGE);
		if (strstr(msg, what) == NULL)
			fail_msg("want \"%s\" in \"%s\"", what, msg);
		free(msg);
		frame_free(&f);
		break;
	}
	struct frame f;
	while (conn_next(c, &f) == 1)
		frame_free(&f); /* what was queued before the RESULT */
	conn_wait_exit(c);
	conn_free(c);
}

static void test_stdin_window_overrun(void **state)
{
	struct conn *c = conn_start();
	uint8_t *chunk = xzalloc(LG_DATA_CHUNK);
	struct req q;

	/* The pipe takes 64 KiB at most, so 8 frames overrun the window whatever is ACKed. */
	c->raw_acks = true;
	q = req_begin(c, LG_MSG_EXEC, 1);
	lg_tlv_put_str(&c->out, LG_TAG_ARGV, "sleep");
	lg_tlv_put_str(&c->out, LG_TAG_ARGV, "10");
	lg_tlv_put_u32(&c->out, LG_TAG_FLAGS, LG_EXEC_STDIN);
	req_send(&q);
	for (int i = 0; i < 8; i++)
		lg_frame_data(&c->out, LG_MSG_STDIN, 1, chunk, LG_DATA_CHUNK);
	conn_flush(c);
	expect_violation(c, "overruns the window");
	free(chunk);
}

static void test_stdin_after_eof(void **state)
{
	struct conn *c = conn_start();
	struct req q;

	c->raw_acks = true;
	q = req_begin(c, LG_MSG_EXEC, 1);
	lg_tlv_put_str(&c->out, LG_TAG_ARGV, "sleep");
	lg_tlv_put_str(&c->out, LG_TAG_ARGV, "10");
	lg_tlv_put_u32(&c->out, LG_TAG_FLAGS, LG_EXEC_STDIN);
	req_send(&q);
	lg_frame_data(&c->out, LG_MSG_STDIN, 1, NULL, 0);
	lg_frame_data(&c->out, LG_MSG_STDIN, 1, "x", 1);
	conn_flush(c);
	expect_violation(c, "after its EOF");
}

/* STDIN_ACK goes guest to host only: from the host it is refused, and the session goes on. */
static void test_stdin_ack_from_host(void **state)
{
	struct conn *c = conn_start();
	uint8_t le[4];
	char *msg;

	lg_put_le32(le, 1);
	lg_frame_data(&c->out, LG_MSG_STDIN_ACK, 7, le, sizeof(le));
	conn_flush(c);
	msg = expect_errno(c, 7, EPROTO);
	assert_non_null(strstr(msg, "unexpected STDIN_ACK"));
	free(msg);
	ping(c, 8);
	conn_stop(c);
}

/* ---- tests: the host's client (host/agent_client.c) against the agent ---- */

struct client {
	struct conn *c; /* fd and pid of the agent; its reader is unused */
	struct lg_agent *a;
};

static void client_start(struct client *cl)
{
	struct lg_err *err = NULL;
	int sv[2];

	cl->c = xzalloc(sizeof(*cl->c));
	lg_reader_init(&cl->c->rd);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	cl->c->pid = fork();
	assert_true(cl->c->pid >= 0);
	if (cl->c->pid == 0)
		exec_agent(sv[1]);
	close(sv[1]);
	cl->c->fd = sv[0];
	if (lg_agent_connect(cl->c->fd, -1, IO_TIMEOUT_MS, &cl->a, &err) < 0)
		fail_msg("connect: %s", err->msg);
}

static void client_stop(struct client *cl)
{
	lg_agent_free(cl->a);
	conn_stop(cl->c);
}

/* Compares stdout with `want` as it streams, and collects stderr. */
struct sink {
	const uint8_t *want;
	size_t want_len;
	size_t got;
	bool mismatch;
	struct lg_buf out; /* stdout when want is NULL */
	size_t err_bytes;
};

static int sink_output(void *ctx, enum lg_stream st, const uint8_t *p, size_t n)
{
	struct sink *s = ctx;

	if (st == LG_STREAM_STDERR) {
		s->err_bytes += n;
		return 0;
	}
	if (s->want == NULL) {
		lg_buf_append(&s->out, p, n);
	} else if (s->got + n > s->want_len || memcmp(s->want + s->got, p, n) != 0) {
		s->mismatch = true;
	}
	s->got += n;
	return 0;
}

static int client_exec(struct client *cl, struct lg_exec_opts *o, struct sink *s,
		       struct lg_exec_result *res)
{
	struct lg_err *err = NULL;
	int r;

	o->on_output = sink_output;
	o->ctx = s;
	r = lg_agent_exec(cl->a, o, res, &err);
	if (r < 0)
		print_error("exec: %s\n", err->msg);
	lg_err_free(&err);
	return r;
}

/*
 * 8 MiB of stdin from memory (MCP's "stdin") into wc -c.  Before stdin
 * credit the client stopped queueing it above 512 KiB and, with no frame
 * coming back from a command that prints nothing until EOF, never
 * queued the rest: wc never saw EOF.
 */
static void test_client_stdin_memory(void **state)
{
	struct client cl;
	size_t n = 8u << 20;
	uint8_t *data = pattern(n, 3);
	char *argv[] = {(char *)"wc", (char *)"-c", NULL};
	struct lg_exec_opts o = {.argv = argv,
				 .timeout_ms = 20000,
				 .stdin_fd = -1,
				 .stdin_data = data,
				 .stdin_len = n,
				 .cancel_fd = -1};
	struct lg_exec_result res;
	struct sink s = {0};

	client_start(&cl);
	assert_int_equal(client_exec(&cl, &o, &s, &res), 0);
	assert_false(res.timed_out);
	assert_int_equal(res.exit_code, 0);
	lg_buf_append(&s.out, "", 1);
	assert_int_equal(strtoull((const char *)lg_buf_head(&s.out), NULL, 10), n);
	lg_buf_free(&s.out);

	/* The same through cat: 8 MiB back out while stdin goes in. */
	argv[0] = (char *)"cat";
	argv[1] = NULL;
	s = (struct sink){.want = data, .want_len = n};
	assert_int_equal(client_exec(&cl, &o, &s, &res), 0);
	assert_false(res.timed_out);
	assert_int_equal(res.exit_code, 0);
	assert_false(s.mismatch);
	assert_int_equal(s.got, n);
	free(data);
	client_stop(&cl);
}

/* Runs argv with data written into its stdin through a pipe by another process. */
static void exec_piped(struct client *cl, char **argv, const uint8_t *data, size_t n,
		       struct sink *s, struct lg_exec_result *res)
{
	struct lg_exec_opts o = {.argv = argv, .timeout_ms = 20000, .cancel_fd = -1};
	int p[2];
	pid_t writer;

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	writer = fork();
	assert_true(writer >= 0);
	if (writer == 0) {
		close(p[0]);
		_exit(lg_write_all(p[1], data, n) == (ssize_t)n ? 0 : 1);
	}
	close(p[1]);
	o.stdin_fd = p[0];
	assert_int_equal(client_exec(cl, &o, s, res), 0);
	close(p[0]);
	kill(writer, SIGKILL);
	assert_int_equal(waitpid(writer, NULL, 0), writer);
	assert_false(res->timed_out);
	assert_int_equal(res->exit_code, 0);
}

/*
 * 8 MiB through a pipe (`luminaguard run`'s stdin).  Into wc -c, which
 * prints nothing until EOF: before stdin credit the client stopped reading
 * the pipe once 512 KiB were queued and never looked at it again.  Then
 * through cat, with large output on both streams.
 */
static void test_client_stdin_pipe(void **state)
{
	struct client cl;
	size_t n = 8u << 20;
	uint8_t *data = pattern(n, 4);
	char *wc[] = {(char *)"wc", (char *)"-c", NULL};
	char *cat[] = {(char *)"sh", (char *)"-c", (char *)"cat; head -c 2000000 /dev/zero >&2",
		       NULL};
	struct lg_exec_result res;
	struct sink s = {0};

	client_start(&cl);
	exec_piped(&cl, wc, data, n, &s, &res);
	lg_buf_append(&s.out, "", 1);
	assert_int_equal(strtoull((const char *)lg_buf_head(&s.out), NULL, 10), n);
	lg_buf_free(&s.out);

	s = (struct sink){.want = data, .want_len = n};
	exec_piped(&cl, cat, data, n, &s, &res);
	assert_false(s.mismatch);
	assert_int_equal(s.got, n);
	assert_int_equal(s.err_bytes, 2000000);
	free(data);
	client_stop(&cl);
}

/*
 * The caller cancels a command that prints but never reads its 8 MiB of
 * stdin: the KILL must not wait behind the stdin.  Before stdin credit
 * the agent stopped reading the port at 1 MiB of queued stdin, the KILL
 * sat in the client's queue behind the rest, and only the guest timeout
 * ended the command.
 */
static void test_client_kill_while_stdin_blocked(void **state)
{
	struct client cl;
	size_t n = 8u << 20;
	uint8_t *data = pattern(n, 5);
	/* It holds its stdin pipe open and never reads it. */
	char *argv[] = {(char *)"sh", (char *)"-c", (char *)"while :; do echo x; sleep 0.01; done",
			NULL};
	struct itimerspec its = {.it_value = {.tv_nsec = 700 * 1000 * 1000}};
	int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	struct lg_exec_opts o = {.argv = argv,
				 .timeout_ms = 30000,
				 .stdin_fd = -1,
				 .stdin_data = data,
				 .stdin_len = n,
				 .cancel_fd = tfd};
	struct lg_exec_result res;
	struct sink s = {0};
	uint64_t t0;

	assert_true(tfd >= 0);
	client_start(&cl);
	t0 = lg_now_ms();
	assert_int_equal(timerfd_settime(tfd, 0, &its, NULL), 0);
	assert_int_equal(client_exec(&cl, &o, &s, &res), 0);
	assert_int_equal(res.signal, SIGKILL);
	assert_false(res.timed_out);
	if (lg_now_ms() - t0 > 5000)
		fail_msg("the kill took %llu ms", (unsigned long long)(lg_now_ms() - t0));
	lg_buf_free(&s.out);
	close(tfd);
	free(data);
	/* The channel is still in step. */
	assert_int_equal(lg_agent_ping(cl.a, NULL), 0);
	client_stop(&cl);
}

/* ---- tests: the host's client against a hostile guest ---- */

/* The fake guest's side: reads frames until the end of an exec's stdin (or EOF). */
static void wait_stdin_eof(int fd)
{
	struct lg_reader rd;

	lg_reader_init(&rd);
	for (;;) {
		struct lg_frame_hdr h;
		const uint8_t *p;
		size_t room;
		uint8_t *dst;
		ssize_t n;
		int r = lg_reader_peek(&rd, &h, &p);

		if (r < 0)
			_exit(2);
		if (r == 1) {
			if (h.type == LG_MSG_STDIN && h.len == 0)
				break;
			lg_reader_pop(&rd);
			continue;
		}
		dst = lg_reader_space(&rd, &room);
		n = read(fd, dst, room);
		if (n <= 0)
			break;
		lg_reader_commit(&rd, (size_t)n);
	}
	lg_reader_free(&rd);
}

/*
 * A fake guest: says `hello`, then (if `after` is not NULL) waits for the
 * end of the exec's stdin and says `after`; then hangs up.  Returns the
 * client's fd (the client borrows it), or <0 if connecting failed.
 */
static int fake_guest(const struct lg_buf *hello, const struct lg_buf *after, struct lg_agent **a,
		      struct lg_err **err)
{
	int sv[2];
	pid_t pid;
	int r;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(sv[0]);
		if (lg_write_all(sv[1], lg_buf_head(hello), lg_buf_pending(hello)) < 0)
			_exit(1);
		if (after != NULL) {
			wait_stdin_eof(sv[1]);
			if (lg_write_all(sv[1], lg_buf_head(after), lg_buf_pending(after)) < 0)
				_exit(1);
		}
		_exit(0);
	}
	close(sv[1]);
	r = lg_agent_connect(sv[0], -1, IO_TIMEOUT_MS, a, err);
	if (r < 0)
		close(sv[0]);
	if (after == NULL || r < 0)
		assert_int_equal(waitpid(pid, NULL, 0), pid);
	return r < 0 ? r : sv[0];
}

static void put_hello(struct lg_buf *b, uint32_t version)
{
	size_t st = lg_frame_begin(b, LG_MSG_HELLO, 0);
	lg_tlv_put_u32(b, LG_TAG_VERSION, version);
	lg_tlv_put_str(b, LG_TAG_AGENT, "fake");
	lg_frame_end(b, st);
}

static void put_ack(struct lg_buf *b, uint32_t id, uint32_t n, size_t len)
{
	uint8_t le[8] = {0};
	lg_put_le32(le, n);
	lg_frame_data(b, LG_MSG_STDIN_ACK, id, le, len);
}

/* Runs `cat` with 100 bytes of stdin against a guest that answers with `frames`. */
static int hostile_exec(uint32_t version, const struct lg_buf *frames, struct lg_err **err)
{
	static uint8_t in[100];
	char *argv[] = {(char *)"cat", NULL};
	struct lg_exec_opts o = {.argv = argv,
				 .stdin_fd = -1,
				 .stdin_data = in,
				 .stdin_len = sizeof(in),
				 .cancel_fd = -1};
	struct lg_exec_result res;
	struct lg_agent *a = NULL;
	struct lg_buf hello = {0};
	int fd, r;

	put_hello(&hello, version);
	fd = fake_guest(&hello, frames, &a, err);
	lg_buf_free(&hello);
	if (fd < 0)
		return fd;
	r = lg_agent_exec(a, &o, &res, err);
	if (r < 0) /* the channel is closed for good after a protocol error */
		assert_int_equal(lg_agent_ping(a, NULL), -EPIPE);
	lg_agent_free(a);
	close(fd);
	while (waitpid(-1, NULL, 0) > 0)
		;
	return r;
}

static void test_client_hostile_stdin_ack(void **state)
{
	static const struct {
		uint32_t version, n;
		size_t len;
		const char *what;
	} cases[] = {
	    {2, 101, 4, "outstanding"}, /* more credit than was sent */
	    {2, 0, 4, "outstanding"},	/* nothing */
	    {2, 10, 3, "outstanding"},	/* short */
	    {2, 10, 8, "outstanding"},	/* long */
	    {1, 10, 4, "protocol-1"},	/* an agent that grants no credit */
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct lg_buf b = {0};
		struct lg_err *err = NULL;

		put_ack(&b, 1, cases[i].n, cases[i].len);
		assert_int_equal(hostile_exec(cases[i].version, &b, &err), -EPROTO);
		if (strstr(err->msg, cases[i].what) == NULL)
			fail_msg("case %zu: %s", i, err->msg);
		lg_err_free(&err);
		lg_buf_free(&b);
	}

	/* A version this host does not know is refused at connect. */
	struct lg_buf b = {0};
	struct lg_err *err = NULL;
	assert_int_equal(hostile_exec(LG_PROTO_VERSION + 1, &b, &err), -EPROTO);
	assert_non_null(strstr(err->msg, "rebuild the image"));
	lg_err_free(&err);
	lg_buf_free(&b);

	/* A good ACK, then the exit: the exec ends normally. */
	put_ack(&b, 1, 60, 4);
	put_ack(&b, 1, 40, 4);
	size_t st = lg_frame_begin(&b, LG_MSG_EXIT, 1);
	lg_tlv_put_u32(&b, LG_TAG_EXIT_CODE, 3);
	lg_frame_end(&b, st);
	assert_int_equal(hostile_exec(2, &b, &err), 0);
	lg_buf_free(&b);
}

/*
 * The guest went away (powered itself off, or QEMU died): a distinct
 * -ECONNRESET, and -EPIPE for every call after it.
 */
static void test_client_vm_gone(void **state)
{
	struct lg_buf b = {0};
	struct lg_err *err = NULL;
	struct lg_agent *a = NULL;
	int fd;

	put_hello(&b, LG_PROTO_VERSION);
	fd = fake_guest(&b, NULL, &a, &err);
	assert_true(fd >= 0);
	assert_int_equal(lg_agent_ping(a, &err), -ECONNRESET);
	assert_non_null(strstr(err->msg, "the guest closed the connection"));
	lg_err_free(&err);
	assert_int_equal(lg_agent_ping(a, NULL), -EPIPE);
	lg_agent_free(a);
	close(fd);
	lg_buf_free(&b);
}

/*
 * What the guest refuses is -EREMOTEIO, whatever errno it gives: a guest
 * that answers ECONNRESET must not pass for a VM that went away.
 */
static void test_client_refusal_code(void **state)
{
	struct client cl;
	struct lg_stat st;
	struct lg_err *err = NULL;
	char *argv[] = {(char *)"true", NULL};
	struct lg_exec_opts o = {
	    .argv = argv, .cwd = "/nonexistent", .stdin_fd = -1, .cancel_fd = -1};
	struct lg_exec_result res;
	struct lg_buf b = {0};
	struct lg_agent *a = NULL;
	int fd;

	client_start(&cl);
	assert_int_equal(lg_agent_stat(cl.a, "/nonexistent/x", &st, &err), -EREMOTEIO);
	assert_non_null(strstr(err->msg, "No such file"));
	lg_err_free(&err);
	assert_int_equal(lg_agent_exec(cl.a, &o, &res, &err), -EREMOTEIO);
	assert_non_null(strstr(err->msg, "cannot run the command"));
	lg_err_free(&err);
	assert_int_equal(lg_agent_ping(cl.a, NULL), 0);
	client_stop(&cl);

	put_hello(&b, LG_PROTO_VERSION);
	size_t start = lg_frame_begin(&b, LG_MSG_RESULT, 1);
	lg_tlv_put_u32(&b, LG_TAG_ERRNO, ECONNRESET);
	lg_frame_end(&b, start);
	fd = fake_guest(&b, NULL, &a, &err);
	assert_true(fd >= 0);
	assert_int_equal(lg_agent_ping(a, &err), -EREMOTEIO);
	lg_err_free(&err);
	lg_agent_free(a);
	close(fd);
	lg_buf_free(&b);
}

/*
 * lg_exec_opts.user: checked on the host before anything is sent, sent
 * only to an agent that knows it (an older one would run the command as
 * root), and resolved by the agent.
 */
static void test_client_user(void **state)
{
	static const char *const bad[] = {
	    "",
	    "Root",
	    "-x",
	    "1x",
	    "a b",
	    "a:b",
	    "../etc",
	    "a$b",
	    "4294967295",
	    "12345678901",
	    "abcdefghijklmnopqrstuvwxyz0123456", /* 33 */
	};
	char *argv[] = {(char *)"id", (char *)"-un", NULL};
	struct lg_exec_opts o = {.argv = argv, .stdin_fd = -1, .cancel_fd = -1};
	struct lg_exec_result res;
	struct lg_err *err = NULL;
	struct lg_agent *a = NULL;
	struct lg_buf b = {0};
	struct client cl;
	struct sink s = {0};
	int fd;

	client_start(&cl);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		o.user = bad[i];
		if (lg_agent_exec(cl.a, &o, &res, &err) != -EINVAL)
			fail_msg("user \"%s\" was not refused", bad[i]);
		assert_non_null(strstr(err->msg, "bad user"));
		assert_null(strchr(err->msg, '\n'));
		lg_err_free(&err);
	}
	/* Nothing reached the agent: the channel is in step. */
	assert_int_equal(lg_agent_ping(cl.a, NULL), 0);

	o.user = "lg-no-such-user";
	assert_int_equal(lg_agent_exec(cl.a, &o, &res, &err), -EREMOTEIO);
	assert_string_equal(err->msg, "cannot run the command in the guest: no user "
				      "'lg-no-such-user' in /etc/passwd");
	lg_err_free(&err);
	if (geteuid() == 0) {
		o.user = "nobody";
		assert_int_equal(client_exec(&cl, &o, &s, &res), 0);
		assert_int_equal(res.exit_code, 0);
		assert_int_equal(lg_buf_pending(&s.out), 7);
		assert_memory_equal(lg_buf_head(&s.out), "nobody\n", 7);
		lg_buf_free(&s.out);
		s = (struct sink){0};
		o.user = "root$"; /* a valid name (Samba's machine accounts) that is not there */
		assert_int_equal(lg_agent_exec(cl.a, &o, &res, &err), -EREMOTEIO);
		lg_err_free(&err);
	}
	client_stop(&cl);

	/* A protocol-2 agent would skip USER and run the command as root: refused. */
	put_hello(&b, 2);
	fd = fake_guest(&b, NULL, &a, &err);
	assert_true(fd >= 0);
	o.user = "nobody";
	assert_int_equal(lg_agent_exec(a, &o, &res, &err), -EOPNOTSUPP);
	assert_non_null(strstr(err->msg, "rebuild the image"));
	lg_err_free(&err);
	lg_agent_free(a);
	close(fd);
	lg_buf_free(&b);
}

static void put_setup_hello(struct lg_buf *b, const void *errno_val, size_t errno_len,
			    const char *msg)
{
	size_t st = lg_frame_begin(b, LG_MSG_HELLO, 0);
	lg_tlv_put_u32(b, LG_TAG_VERSION, LG_PROTO_VERSION);
	lg_tlv_put_str(b, LG_TAG_AGENT, "fake");
	lg_tlv_put(b, LG_TAG_ERRNO, errno_val, errno_len);
	if (msg != NULL)
		lg_tlv_put_str(b, LG_TAG_MESSAGE, msg);
	lg_frame_end(b, st);
}

/*
 * A guest that booted but could not set up its root file system says so
 * in HELLO: the connect fails with LG_AGENT_SETUP_ERRNO and its reason,
 * in one printable line.
 */
static void test_client_setup_error(void **state)
{
	static const struct {
		uint32_t errnum;
		size_t len;
		const char *msg;
		int want;
		const char *want_msg;
	} cases[] = {
	    {EINVAL, 4, "root disk: mount erofs /dev/vda: Invalid argument", -LG_AGENT_SETUP_ERRNO,
	     "the guest could not set up its root file system: root disk: mount erofs /dev/vda: "
	     "Invalid argument"},
	    /* A hostile guest's bytes reach no terminal: one line, control bytes shown as '?'. */
	    {ENODEV, 4, "no disk\n\033[2Jfake prompt$ ", -LG_AGENT_SETUP_ERRNO,
	     "the guest could not set up its root file system: no disk??[2Jfake prompt$ "},
	    {ENODEV, 4, NULL, -LG_AGENT_SETUP_ERRNO,
	     "the guest could not set up its root file system: No such device"},
	    {ECONNRESET, 4, "x", -LG_AGENT_SETUP_ERRNO, NULL}, /* the guest's errno is not ours */
	    {EINVAL, 2, "short", -EPROTO, "agent channel: malformed HELLO: Protocol error"},
	    {0, 4, NULL, 0, NULL}, /* ERRNO 0: nothing went wrong */
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct lg_buf b = {0};
		struct lg_err *err = NULL;
		struct lg_agent *a = NULL;
		uint8_t le[4];
		int fd;

		lg_put_le32(le, cases[i].errnum);
		put_setup_hello(&b, le, cases[i].len, cases[i].msg);
		fd = fake_guest(&b, NULL, &a, &err);
		if (fd != cases[i].want && !(cases[i].want == 0 && fd >= 0))
			fail_msg("case %zu: connect returned %d (%s)", i, fd, err ? err->msg : "");
		if (fd >= 0) {
			lg_agent_free(a);
			close(fd);
		} else if (cases[i].want_msg != NULL) {
			assert_string_equal(err->msg, cases[i].want_msg);
		}
		lg_err_free(&err);
		lg_buf_free(&b);
	}
}

/* ---- tests: commands cannot end the sandbox ---- */

/* Capability set `name` ("CapBnd:" ...) of the command, from its /proc/self/status. */
static uint64_t cap_field(const struct lg_buf *status, const char *name)
{
	cleanup_free char *s = xmalloc(lg_buf_pending(status) + 1);
	char *p;

	memcpy(s, lg_buf_head(status), lg_buf_pending(status));
	s[lg_buf_pending(status)] = '\0';
	p = strstr(s, name);
	if (p == NULL)
		fail_msg("no %s in %s", name, s);
	return strtoull(p + strlen(name), NULL, 16);
}

static void test_exec_no_boot_cap(void **state)
{
	struct conn *c = conn_start();
	const uint64_t boot = 1ull << 22; /* CAP_SYS_BOOT */
	struct exec_res r;

	run(c, 1, &(struct exec_opts){.argv = ARGV("cat", "/proc/self/status")}, &r);
	assert_int_equal(r.exit_code, 0);
	assert_int_equal(r.err, 0);
	/* Outside a VM without CAP_SETPCAP the bounding set stays; the agent then has no
	 * CAP_SYS_BOOT. */
	if (geteuid() == 0)
		assert_int_equal(cap_field(&r.out, "CapBnd:") & boot, 0);
	assert_int_equal(cap_field(&r.out, "CapEff:") & boot, 0);
	assert_int_equal(cap_field(&r.out, "CapPrm:") & boot, 0);
	assert_int_equal(cap_field(&r.out, "CapInh:") & boot, 0);
	assert_int_equal(cap_field(&r.out, "CapAmb:") & boot, 0);
	exec_res_free(&r);
	conn_stop(c);
}

/* ---- ADOPT (protocol 4) ---- */

/* The real agent, not PID 1: it checks ADOPT's fields and changes nothing (DRY_RUN). */
static void test_adopt_request_checks(void **state)
{
	struct conn *c = conn_start();
	uint8_t seed[64] = {1, 2, 3};
	struct frame f;
	struct req r;
	char *msg;

	/* Complete and well formed: OK, flagged as a dry run on a host. */
	r = req_begin(c, LG_MSG_ADOPT, 1);
	lg_tlv_put(&c->out, LG_TAG_SEED, seed, sizeof(seed));
	lg_tlv_put_u64(&c->out, LG_TAG_REALTIME_NS, 1700000000ull * 1000000000ull);
	lg_tlv_put_str(&c->out, LG_TAG_HOSTNAME, "sb-1");
	lg_tlv_put_str(&c->out, LG_TAG_MACHINE_ID, "0123456789abcdef0123456789abcdef");
	req_send(&r);
	expect_result(c, 1, &f);
	assert_int_equal(field_u32(&f, LG_TAG_ERRNO, 99), 0);
	assert_int_equal(field_u32(&f, LG_TAG_FLAGS, 99), LG_ADOPT_DRY_RUN);
	frame_free(&f);

	/* A field missing. */
	r = req_begin(c, LG_MSG_ADOPT, 2);
	lg_tlv_put(&c->out, LG_TAG_SEED, seed, sizeof(seed));
	lg_tlv_put_str(&c->out, LG_TAG_HOSTNAME, "sb-1");
	req_send(&r);
	msg = expect_errno(c, 2, EINVAL);
	assert_non_null(strstr(msg, "needs SEED, REALTIME_NS, HOSTNAME and MACHINE_ID"));
	free(msg);

	/* A seed too short to reseed from. */
	r = req_begin(c, LG_MSG_ADOPT, 3);
	lg_tlv_put(&c->out, LG_TAG_SEED, seed, 16);
	req_send(&r);
	free(expect_errno(c, 3, EPROTO));

	/* Hostnames that are not one RFC 1123 label. */
	const char *bad_hosts[] = {
	    "-lead", "trail-", "under_score",
	    "a.b",   "",       "0123456789012345678901234567890123456789012345678901234567890123"};
	for (size_t i = 0; i < ARRAY_SIZE(bad_hosts); i++) {
		r = req_begin(c, LG_MSG_ADOPT, 10 + (uint32_t)i);
		lg_tlv_put_str(&c->out, LG_TAG_HOSTNAME, bad_hosts[i]);
		req_send(&r);
		free(expect_errno(c, 10 + (uint32_t)i, EINVAL));
	}
	/* Machine ids that are not 32 lowercase hex digits. */
	const char *bad_ids[] = {"0123456789ABCDEF0123456789ABCDEF", "0123",
				 "00000000000000000000000000000000",
				 "0123456789abcdef0123456789abcdeg"};
	for (size_t i = 0; i < ARRAY_SIZE(bad_ids); i++) {
		r = req_begin(c, LG_MSG_ADOPT, 20 + (uint32_t)i);
		lg_tlv_put_str(&c->out, LG_TAG_MACHINE_ID, bad_ids[i]);
		req_send(&r);
		free(expect_errno(c, 20 + (uint32_t)i, EINVAL));
	}
	/* Refusals leave the session serving; PING names the agent and its protocol. */
	r = req_begin(c, LG_MSG_PING, 30);
	req_send(&r);
	expect_result(c, 30, &f);
	assert_int_equal(field_u32(&f, LG_TAG_VERSION, 0), LG_PROTO_VERSION);
	msg = field_str(&f, LG_TAG_AGENT);
	assert_true(strncmp(msg, "lg-agent ", 9) == 0);
	free(msg);
	frame_free(&f);
	conn_stop(c);
}

/* The host's client against the real agent: adopt, and attach (PING) as after a restore. */
static void test_client_adopt_and_attach(void **state)
{
	struct client cl;
	struct lg_err *err = NULL;
	struct lg_agent *b = NULL;
	uint32_t flags = 0;

	client_start(&cl);
	assert_int_equal(lg_agent_version(cl.a), LG_PROTO_VERSION);
	assert_int_equal(lg_agent_adopt(cl.a, "box-7", &flags, &err), 0);
	assert_int_equal(flags, LG_ADOPT_DRY_RUN);
	assert_int_equal(lg_agent_adopt(cl.a, NULL, NULL, &err), 0);
	/* A bad hostname is refused here, before anything is sent. */
	assert_int_equal(lg_agent_adopt(cl.a, "no_underscores", NULL, &err), -EINVAL);
	assert_null(strchr(err->msg, '\n'));
	lg_err_free(&err);
	assert_int_equal(lg_agent_ping(cl.a, &err), 0);
	/* Attach on the same channel: skips nothing it should not, learns the version. */
	assert_int_equal(lg_agent_attach(cl.c->fd, -1, IO_TIMEOUT_MS, &b, &err), 0);
	assert_int_equal(lg_agent_version(b), LG_PROTO_VERSION);
	assert_true(strncmp(lg_agent_name(b), "lg-agent ", 9) == 0);
	lg_agent_free(b);
	client_stop(&cl);
}

/*
 * A fake guest that writes `hello` (may be empty), waits for one request
 * frame, answers it with `reply`, and reads until the host hangs up.
 * Returns the host's end.
 */
static int fake_peer(const struct lg_buf *hello, const struct lg_buf *reply, pid_t *pid)
{
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	*pid = fork();
	assert_true(*pid >= 0);
	if (*pid == 0) {
		struct lg_reader rd;
		char sink[4096];

		close(sv[0]);
		if (lg_buf_pending(hello) > 0 &&
		    lg_write_all(sv[1], lg_buf_head(hello), lg_buf_pending(hello)) < 0)
			_exit(1);
		lg_reader_init(&rd);
		for (;;) {
			struct lg_frame_hdr h;
			const uint8_t *p;
			size_t room;
			uint8_t *dst;
			ssize_t n;
			int r = lg_reader_peek(&rd, &h, &p);

			if (r != 0)
				break;
			dst = lg_reader_space(&rd, &room);
			n = read(sv[1], dst, room);
			if (n <= 0)
				_exit(0);
			lg_reader_commit(&rd, (size_t)n);
		}
		if (lg_write_all(sv[1], lg_buf_head(reply), lg_buf_pending(reply)) < 0)
			_exit(1);
		while (read(sv[1], sink, sizeof(sink)) > 0)
			;
		_exit(0);
	}
	close(sv[1]);
	return sv[0];
}

static void fake_done(int fd, pid_t pid)
{
	close(fd);
	assert_int_equal(waitpid(pid, NULL, 0), pid);
}

/* lg_agent_adopt against a guest answering `reply` (a RESULT for id 1). */
static int hostile_adopt(uint32_t version, const struct lg_buf *reply, uint32_t *flags,
			 struct lg_err **err)
{
	struct lg_buf hello = {0};
	struct lg_agent *a = NULL;
	pid_t pid;
	int fd, r;

	put_hello(&hello, version);
	fd = fake_peer(&hello, reply, &pid);
	lg_buf_free(&hello);
	if (lg_agent_connect(fd, -1, IO_TIMEOUT_MS, &a, err) < 0)
		fail_msg("connect: %s", (*err)->msg);
	r = lg_agent_adopt(a, "h", flags, err);
	if (r == -EPROTO)
		assert_int_equal(lg_agent_ping(a, NULL), -EPIPE);
	lg_agent_free(a);
	fake_done(fd, pid);
	return r;
}

/* ADOPT's reply is parsed strictly: exactly ERRNO, MESSAGE, FLAGS, each once, known bits. */
static void test_client_adopt_hostile_replies(void **state)
{
	struct lg_err *err = NULL;
	uint32_t flags;

	for (int i = 0; i < 9; i++) {
		struct lg_buf b = {0};
		size_t st = lg_frame_begin(&b, LG_MSG_RESULT, 1);
		int want = -EPROTO;
		uint8_t two[2] = {0, 0};

		switch (i) {
		case 0: /* well formed */
			lg_tlv_put_u32(&b, LG_TAG_ERRNO, 0);
			lg_tlv_put_u32(&b, LG_TAG_FLAGS, LG_ADOPT_MACHINE_ID_WRITTEN);
			want = 0;
			break;
		case 1: /* no FLAGS */
			lg_tlv_put_u32(&b, LG_TAG_ERRNO, 0);
			break;
		case 2: /* FLAGS twice */
			lg_tlv_put_u32(&b, LG_TAG_ERRNO, 0);
			lg_tlv_put_u32(&b, LG_TAG_FLAGS, 0);
			lg_tlv_put_u32(&b, LG_TAG_FLAGS, 1);
			break;
		case 3: /* FLAGS of the wrong length */
			lg_tlv_put_u32(&b, LG_TAG_ERRNO, 0);
			lg_tlv_put(&b, LG_TAG_FLAGS, two, sizeof(two));
			break;
		case 4: /* unknown bits */
			lg_tlv_put_u32(&b, LG_TAG_ERRNO, 0);
			lg_tlv_put_u32(&b, LG_TAG_FLAGS, 0x80);
			break;
		case 5: /* a field ADOPT never answers with */
			lg_tlv_put_u32(&b, LG_TAG_ERRNO, 0);
			lg_tlv_put_u32(&b, LG_TAG_FLAGS, 0);
			lg_tlv_put_str(&b, LG_TAG_PATH, "/etc/shadow");
			break;
		case 6: /* ERRNO twice (a second, non-zero one must not hide) */
			lg_tlv_put_u32(&b, LG_TAG_ERRNO, 0);
			lg_tlv_put_u32(&b, LG_TAG_FLAGS, 0);
			lg_tlv_put_u32(&b, LG_TAG_ERRNO, 5);
			break;
		case 7: /* a refusal: the guest's message, the channel stays */
			lg_tlv_put_u32(&b, LG_TAG_ERRNO, EPERM);
			lg_tlv_put_str(&b, LG_TAG_MESSAGE, "adopt: clock_settime: nope");
			want = -EREMOTEIO;
			break;
		case 8: /* a field cut short (TLV length past the end) */
			lg_tlv_put_u32(&b, LG_TAG_ERRNO, 0);
			lg_tlv_put_u32(&b, LG_TAG_FLAGS, 0);
			b.len -= 2;
			break;
		}
		lg_frame_end(&b, st);
		flags = 99;
		print_message("case %d\n", i);
		assert_int_equal(hostile_adopt(LG_PROTO_VERSION, &b, &flags, &err), want);
		if (want == 0)
			assert_int_equal(flags, LG_ADOPT_MACHINE_ID_WRITTEN);
		else
			assert_null(strchr(err->msg, '\n'));
		lg_err_free(&err);
		lg_buf_free(&b);
	}
}

/* An agent older than protocol 4 is never sent ADOPT (its reader would end the session). */
static void test_client_adopt_old_agent(void **state)
{
	struct lg_buf none = {0};
	struct lg_err *err = NULL;

	assert_int_equal(hostile_adopt(3, &none, NULL, &err), -EOPNOTSUPP);
	assert_non_null(strstr(err->msg, "luminaguard image build"));
	assert_null(strchr(err->msg, '\n'));
	lg_err_free(&err);
}

/* Attach (after a restore) needs PING's VERSION, 4 or later. */
static void test_client_attach_checks(void **state)
{
	for (int i = 0; i < 4; i++) {
		struct lg_buf b = {0}, none = {0};
		size_t st = lg_frame_begin(&b, LG_MSG_RESULT, 1);
		struct lg_agent *a = NULL;
		struct lg_err *err = NULL;
		pid_t pid;
		int fd, r;

		lg_tlv_put_u32(&b, LG_TAG_ERRNO, 0);
		if (i == 1)
			lg_tlv_put_u32(&b, LG_TAG_VERSION, 3);
		if (i == 2)
			lg_tlv_put_u32(&b, LG_TAG_VERSION, LG_PROTO_VERSION + 1);
		if (i == 3)
			lg_tlv_put_u32(&b, LG_TAG_VERSION, LG_PROTO_VERSION);
		lg_frame_end(&b, st);
		fd = fake_peer(&none, &b, &pid);
		r = lg_agent_attach(fd, -1, IO_TIMEOUT_MS, &a, &err);
		if (i == 3) {
			assert_int_equal(r, 0);
			assert_int_equal(lg_agent_version(a), LG_PROTO_VERSION);
			assert_string_equal(lg_agent_name(a), "lg-agent");
			lg_agent_free(a);
		} else {
			assert_int_equal(r, -EPROTO);
			assert_non_null(strstr(err->msg, "image build"));
			lg_err_free(&err);
		}
		fake_done(fd, pid);
		lg_buf_free(&b);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hello_and_ping),
	    cmocka_unit_test(test_exec_echo),
	    cmocka_unit_test(test_exec_exit_code_and_stderr),
	    cmocka_unit_test(test_exec_not_found),
	    cmocka_unit_test(test_exec_env_cwd),
	    cmocka_unit_test(test_exec_user),
	    cmocka_unit_test(test_exec_signal),
	    cmocka_unit_test(test_exec_timeout),
	    cmocka_unit_test(test_exec_stdin),
	    cmocka_unit_test(test_exec_stdin_backpressure),
	    cmocka_unit_test(test_exec_large_output),
	    cmocka_unit_test(test_exec_concurrent),
	    cmocka_unit_test(test_exec_grandchild_holds_pipe),
	    cmocka_unit_test(test_kill),
	    cmocka_unit_test(test_kill_race),
	    cmocka_unit_test(test_exec_limits),
	    cmocka_unit_test(test_shutdown),
	    cmocka_unit_test(test_stdin_for_unknown_id),
	    cmocka_unit_test(test_file_write_read),
	    cmocka_unit_test(test_file_large),
	    cmocka_unit_test(test_list_dir_and_stat),
	    cmocka_unit_test(test_list_dir_truncated),
	    cmocka_unit_test(test_mkdir_remove),
	    cmocka_unit_test(test_garbage_header),
	    cmocka_unit_test(test_oversize_header),
	    cmocka_unit_test(test_bad_tlv_keeps_serving),
	    cmocka_unit_test(test_eof_mid_frame),
	    cmocka_unit_test(test_stdin_blocked_kill),
	    cmocka_unit_test(test_stdin_window_with_output),
	    cmocka_unit_test(test_stdin_window_overrun),
	    cmocka_unit_test(test_stdin_after_eof),
	    cmocka_unit_test(test_stdin_ack_from_host),
	    cmocka_unit_test(test_client_stdin_memory),
	    cmocka_unit_test(test_client_stdin_pipe),
	    cmocka_unit_test(test_client_kill_while_stdin_blocked),
	    cmocka_unit_test(test_client_hostile_stdin_ack),
	    cmocka_unit_test(test_client_vm_gone),
	    cmocka_unit_test(test_client_refusal_code),
	    cmocka_unit_test(test_client_user),
	    cmocka_unit_test(test_client_setup_error),
	    cmocka_unit_test(test_exec_no_boot_cap),
	    cmocka_unit_test(test_adopt_request_checks),
	    cmocka_unit_test(test_client_adopt_and_attach),
	    cmocka_unit_test(test_client_adopt_hostile_replies),
	    cmocka_unit_test(test_client_adopt_old_agent),
	    cmocka_unit_test(test_client_attach_checks),
	};

	/* Writing to an agent that hung up must be an error to look at, not death. */
	signal(SIGPIPE, SIG_IGN);
	/* File modes below assume the usual umask. */
	umask(022);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
