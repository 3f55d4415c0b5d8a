/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `luminaguard run` through the service: POST /v1/sandboxes, POST
 * /v1/sandboxes/ID/exec (NDJSON output streamed to ours), DELETE
 * /v1/sandboxes/ID, whatever happened in between.
 */
#include "cli/run_remote.h"

#include "cli/client.h"
#include "cli/signals.h"

#include "common/encoding.h"
#include "common/log.h"
#include "common/paths.h"
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The API's request body limit (docs/api.md); a larger exec goes standalone. */
#define REMOTE_MAX_BODY (1u << 20)
/* Ctrl-C during a create: how long we still wait to learn the id to destroy. */
#define CREATE_GRACE_MS 15000
/* The final DELETE; a service that does not answer in this time keeps the sandbox. */
#define DELETE_TIMEOUT_MS 10000

/* Why the API cannot run this as run would, or NULL. */
static const char *needs_standalone(const struct run_opts *o)
{
	if (o->standalone)
		return "--standalone";
	if (o->net_allow != NULL)
		return "--net";
	if (o->approve_tty)
		return "--approve tty";
	if (o->console)
		return "--console";
	if (o->policy != NULL)
		return "--policy";
	if (o->backend != NULL)
		return "--backend";
	if (o->accel != HV_ACCEL_AUTO)
		return "--accel";
	if (o->jail.disabled)
		return "--no-jail";
	if (o->jail.seccomp != LG_SECCOMP_STRICT)
		return "--seccomp";
	/* JSON carries text: raw bytes in argv or --env need the agent protocol. */
	for (size_t i = 0; o->command[i] != NULL; i++)
		if (!lg_utf8_valid((const uint8_t *)o->command[i], strlen(o->command[i])))
			return "an argument that is not UTF-8";
	for (size_t i = 0; i < o->n_env; i++)
		if (!lg_utf8_valid((const uint8_t *)o->env[i], strlen(o->env[i])))
			return "an --env value that is not UTF-8";
	if (o->workdir != NULL && !lg_utf8_valid((const uint8_t *)o->workdir, strlen(o->workdir)))
		return "a --workdir that is not UTF-8";
	return NULL;
}

/* ---- stdin ---- */

struct replay {
	int src, dst;
	uint8_t *head;
	size_t n;
};

static void *replay_main(void *arg)
{
	struct replay *r = arg;
	uint8_t buf[65536];
	ssize_t n;

	if (lg_write_all(r->dst, r->head, r->n) >= 0) {
		while ((n = read(r->src, buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR))
			if (n > 0 && lg_write_all(r->dst, buf, (size_t)n) < 0)
				break;
	}
	close(r->dst);
	close(r->src);
	free(r->head);
	free(r);
	return NULL;
}

/*
 * Gives back the bytes read from stdin: a seekable stdin is moved back to
 * where it was; otherwise stdin becomes a pipe that a thread fills with
 * them and then with the rest of the old stdin, so the standalone path
 * reads exactly what it would have.
 */
static int stdin_give_back(uint8_t *head, size_t n, off_t start, struct lg_err **err)
{
	struct replay *r;
	pthread_t t;
	int p[2], src;

	if (n == 0) {
		free(head);
		return 0;
	}
	if (start >= 0 && lseek(STDIN_FILENO, start, SEEK_SET) == start) {
		free(head);
		return 0;
	}
	src = fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 3);
	if (src < 0 || pipe2(p, O_CLOEXEC) < 0) {
		free(head);
		if (src >= 0)
			close(src);
		return lg_err_sys(err, "stdin");
	}
	/* dup2 leaves fd 0 without FD_CLOEXEC, as stdin was. */
	if (dup2(p[0], STDIN_FILENO) < 0) {
		free(head);
		close(src);
		close(p[0]);
		close(p[1]);
		return lg_err_sys(err, "stdin");
	}
	close(p[0]);
	r = xzalloc(sizeof(*r));
	r->src = src;
	r->dst = p[1];
	r->head = head;
	r->n = n;
	if (pthread_create(&t, NULL, replay_main, r) != 0) {
		close(src);
		close(p[1]);
		free(head);
		free(r);
		return lg_err_msg(err, EAGAIN, "stdin: cannot start a thread");
	}
	pthread_detach(t);
	return 0;
}

enum stdin_verdict { STDIN_NONE, STDIN_READ, STDIN_STANDALONE, STDIN_SIGNAL };

/*
 * Reads piped stdin to its end, at most LG_REMOTE_MAX_STDIN bytes within
 * LG_REMOTE_STDIN_WAIT_MS.  STDIN_STANDALONE: over either bound, with
 * what was read given back.  A terminal is never read (STDIN_NONE).
 */
static int read_stdin(const struct run_opts *o, uint8_t **out, size_t *len, enum stdin_verdict *v,
		      struct lg_err **err)
{
	uint64_t deadline = lg_now_ms() + LG_REMOTE_STDIN_WAIT_MS;
	size_t n = 0, cap = 65536;
	uint8_t *buf;
	off_t start;
	struct stat st;

	*out = NULL;
	*len = 0;
	*v = STDIN_NONE;
	if (o->no_stdin || isatty(STDIN_FILENO) || fstat(STDIN_FILENO, &st) < 0)
		return 0;
	start = lseek(STDIN_FILENO, 0, SEEK_CUR);
	if (S_ISREG(st.st_mode) && start >= 0 && st.st_size - start > LG_REMOTE_MAX_STDIN) {
		*v = STDIN_STANDALONE;
		return 0;
	}
	buf = xmalloc(cap);
	for (;;) {
		struct pollfd p[2] = {{.fd = STDIN_FILENO, .events = POLLIN},
				      {.fd = lg_signals_fd(), .events = POLLIN}};
		uint64_t now = lg_now_ms();
		ssize_t r;
		int pr;

		if (now >= deadline) {
			lg_info("run: stdin did not end within %d ms: standalone",
				LG_REMOTE_STDIN_WAIT_MS);
			*v = STDIN_STANDALONE;
			return stdin_give_back(buf, n, start, err);
		}
		pr = poll(p, 2, (int)(deadline - now));
		if (pr < 0 && errno != EINTR) {
			free(buf);
			return lg_err_sys(err, "poll stdin");
		}
		if (p[1].revents & POLLIN) {
			free(buf);
			*v = STDIN_SIGNAL;
			return 0;
		}
		if (pr <= 0 || p[0].revents == 0)
			continue;
		if (n == cap)
			buf = xrealloc(buf, cap *= 2);
		r = read(STDIN_FILENO, buf + n, cap - n);
		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (r < 0) {
			free(buf);
			return lg_err_sys(err, "reading stdin");
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n > LG_REMOTE_MAX_STDIN) {
			lg_info("run: stdin is over %u KiB: standalone", LG_REMOTE_MAX_STDIN >> 10);
			*v = STDIN_STANDALONE;
			return stdin_give_back(buf, n, start, err);
		}
	}
	*out = buf;
	*len = n;
	*v = STDIN_READ;
	return 0;
}

/* ---- the requests ---- */

static json_t *exec_body(const struct run_opts *o, const uint8_t *in, size_t in_len, bool has_in)
{
	json_t *argv = json_array(), *body;

	for (size_t i = 0; o->command[i] != NULL; i++)
		json_array_append_new(argv, json_string(o->command[i]));
	body = json_pack("{s:o}", "argv", argv);
	if (o->n_env > 0) {
		json_t *env = json_object();

		for (size_t i = 0; i < o->n_env; i++) {
			const char *eq = strchr(o->env[i], '=');
			cleanup_free char *k = xasprintf("%.*s", (int)(eq - o->env[i]), o->env[i]);

			json_object_set_new(env, k, json_string(eq + 1));
		}
		json_object_set_new(body, "env", env);
	}
	if (o->workdir != NULL)
		json_object_set_new(body, "cwd", json_string(o->workdir));
	if (o->user != NULL)
		json_object_set_new(body, "user", json_string(o->user));
	if (o->timeout_s != 0)
		json_object_set_new(body, "timeout", json_integer(o->timeout_s));
	if (has_in && lg_utf8_valid(in, in_len)) {
		json_object_set_new(body, "stdin", json_stringn((const char *)in, in_len));
	} else if (has_in) {
		char *b64 = lg_base64_encode(in, in_len);

		json_object_set_new(body, "stdin_b64", json_string(b64));
		free(b64);
	}
	return body;
}

/* The service's error for a reply that is not the one wanted, as *err. */
static int service_error(const struct lg_client_resp *r, struct lg_err **err)
{
	cleanup_free char *text = lg_client_error_text(r);

	return lg_err_msg(err, r->status == 429 ? EAGAIN : EIO, "%s", text);
}

static int create(const char *sock, const struct run_opts *o, const char *rid, char **id,
		  struct lg_err **err)
{
	/* ephemeral: thrown away after the command, so the DELETE needs no human (docs/api.md). */
	json_t *body = json_pack("{s:i, s:I, s:b}", "cpus", (int)o->cpus, "memory",
				 (json_int_t)o->memory_mib, "ephemeral", 1);
	cleanup_free char *text = NULL;
	struct lg_client_req rq = {.method = "POST",
				   .target = "/v1/sandboxes",
				   .request_id = rid,
				   .cancel_fd = lg_signals_fd(),
				   .grace_ms = CREATE_GRACE_MS};
	struct lg_client_resp resp;
	json_t *jid;
	int r;

	if (o->image != NULL)
		json_object_set_new(body, "image", json_string(o->image));
	if (o->disk_mib != 0)
		json_object_set_new(body, "disk", json_integer((json_int_t)o->disk_mib));
	text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	rq.body = text;
	rq.body_len = strlen(text);
	r = lg_client_call(sock, &rq, &resp, err);
	if (r < 0)
		return r;
	jid = resp.json != NULL ? json_object_get(resp.json, "id") : NULL;
	if (resp.status / 100 != 2) {
		r = service_error(&resp, err);
	} else if (!json_is_string(jid) || !lg_client_id_ok(json_string_value(jid))) {
		r = lg_err_msg(err, EBADMSG, "the service created a sandbox without a valid id");
	} else {
		json_t *path = json_object_get(resp.json, "spawn_path");
		json_t *ms = json_object_get(resp.json, "spawn_ms");

		*id = xstrdup(json_string_value(jid));
		lg_info("run: sandbox %s from the service (%s, %lld ms)", *id,
			json_is_string(path) ? json_string_value(path) : "?",
			json_is_integer(ms) ? (long long)json_integer_value(ms) : -1LL);
	}
	lg_client_resp_clear(&resp);
	return r;
}

static void destroy(const char *sock, const char *id, const char *rid)
{
	cleanup_free char *target = xasprintf("/v1/sandboxes/%s", id);
	struct lg_client_req rq = {.method = "DELETE",
				   .target = target,
				   .request_id = rid,
				   .cancel_fd = -1,
				   .timeout_ms = DELETE_TIMEOUT_MS};
	struct lg_client_resp resp;
	struct lg_err *err = NULL;

	if (lg_client_call(sock, &rq, &resp, &err) == 0 && resp.status / 100 != 2)
		service_error(&resp, &err);
	if (err != NULL)
		lg_warn("the service did not destroy sandbox %s (%s); `luminaguard kill %s` ends "
			"it",
			id, err->msg, id);
	lg_err_free(&err);
	lg_client_resp_clear(&resp);
}

struct exec_state {
	bool done;
	int exit_code, signal;
	bool timed_out;
	char *error; /* the stream's {"error"} */
};

static int write_stream(int fd, const char *p, size_t n, struct lg_err **err)
{
	ssize_t w = lg_write_all(fd, p, n);

	if (w < 0)
		return lg_err_msg(err, (int)-w, "writing the command's %s: %s",
				  fd == STDOUT_FILENO ? "stdout" : "stderr", strerror((int)-w));
	return 0;
}

static int on_exec_line(void *ctx, json_t *obj, struct lg_err **err)
{
	struct exec_state *st = ctx;
	json_t *stream = json_object_get(obj, "stream"), *v;

	if (st->done)
		return 0;
	if (stream != NULL) {
		const char *name = json_string_value(stream);
		int fd;

		if (name != NULL && strcmp(name, "stdout") == 0)
			fd = STDOUT_FILENO;
		else if (name != NULL && strcmp(name, "stderr") == 0)
			fd = STDERR_FILENO;
		else
			return lg_err_msg(err, EBADMSG,
					  "the service sent output of an unknown "
					  "stream");
		if (json_is_string(v = json_object_get(obj, "data")))
			return write_stream(fd, json_string_value(v), json_string_length(v), err);
		if (json_is_string(v = json_object_get(obj, "data_b64"))) {
			cleanup_free uint8_t *bytes = NULL;
			size_t n;

			if (lg_base64_decode(json_string_value(v), json_string_length(v), &bytes,
					     &n) < 0)
				return lg_err_msg(err, EBADMSG,
						  "the service sent output in bad base64");
			return write_stream(fd, (const char *)bytes, n, err);
		}
		return lg_err_msg(err, EBADMSG, "the service sent output without data");
	}
	if ((v = json_object_get(obj, "exit_code")) != NULL) {
		json_t *sig = json_object_get(obj, "signal"),
		       *to = json_object_get(obj, "timed_out");

		if (!json_is_integer(v) || json_integer_value(v) < 0 ||
		    json_integer_value(v) > 255 || (sig != NULL && !json_is_integer(sig)) ||
		    (sig != NULL &&
		     (json_integer_value(sig) < 0 || json_integer_value(sig) > 127)) ||
		    (to != NULL && !json_is_boolean(to)))
			return lg_err_msg(err, EBADMSG, "the service sent a bad exit status");
		st->exit_code = (int)json_integer_value(v);
		st->signal = sig != NULL ? (int)json_integer_value(sig) : 0;
		st->timed_out = json_is_true(to);
		st->done = true;
		return 0;
	}
	if (json_is_string(v = json_object_get(obj, "error"))) {
		st->error = lg_client_printable(json_string_value(v), 512);
		st->done = true;
	}
	/* Anything else is a kind of line this client does not know yet. */
	return 0;
}

static int exec(const char *sock, const char *id, const char *body, const char *rid,
		struct exec_state *st, struct lg_err **err)
{
	cleanup_free char *target = xasprintf("/v1/sandboxes/%s/exec", id);
	struct lg_client_req rq = {.method = "POST",
				   .target = target,
				   .body = body,
				   .body_len = strlen(body),
				   .request_id = rid,
				   .cancel_fd = lg_signals_fd(),
				   .on_line = on_exec_line,
				   .ctx = st};
	struct lg_client_resp resp;
	int r;

	r = lg_client_call(sock, &rq, &resp, err);
	if (r < 0)
		return r;
	if (resp.status != 200)
		r = service_error(&resp, err);
	else if (resp.body != NULL)
		r = lg_err_msg(err, EBADMSG, "the service answered the exec without a stream");
	else if (st->error != NULL)
		r = lg_err_msg(err, EIO, "%s", st->error);
	else if (!st->done)
		r = lg_err_msg(err, EBADMSG,
			       "the service's exec stream ended without an exit "
			       "status");
	lg_client_resp_clear(&resp);
	return r;
}

static int interrupted(int *exit_code, const char *what)
{
	int sig = lg_signals_caught();

	lg_error("interrupted by signal %d%s", sig, what);
	*exit_code = 128 + sig;
	return 1;
}

int run_via_service(const struct run_opts *o, int *exit_code, struct lg_err **err)
{
	cleanup_free char *sock = NULL, *id = NULL, *body_text = NULL;
	cleanup_free uint8_t *in = NULL;
	struct exec_state st = {0};
	enum stdin_verdict sv;
	const char *why;
	char rid[32] = "run-";
	size_t in_len;
	json_t *body;
	int fd, r;

	why = needs_standalone(o);
	if (why != NULL) {
		lg_info("run: %s: standalone", why);
		return 0;
	}
	if (lg_signals_install(err) < 0)
		return -1;
	sock = lg_serve_socket_path();
	/* Is anyone there?  Asked before stdin is read, so that "no" consumes nothing. */
	r = lg_client_connect(sock, LG_CLIENT_CONNECT_MS, &fd, err);
	/* No socket, nobody on it, or a path no service could listen on. */
	if (r == -ENOENT || r == -ECONNREFUSED || r == -ENAMETOOLONG || r == -ENOTDIR) {
		lg_info("run: %s: standalone", (*err)->msg);
		lg_err_free(err);
		return 0;
	}
	if (r < 0)
		return lg_err_wrap(err, "the service (--standalone does without it)");
	close(fd);

	r = read_stdin(o, &in, &in_len, &sv, err);
	if (r < 0)
		return r;
	if (sv == STDIN_STANDALONE)
		return 0;
	if (sv == STDIN_SIGNAL)
		return interrupted(exit_code, "");
	body = exec_body(o, in, in_len, sv == STDIN_READ);
	body_text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	if (strlen(body_text) > REMOTE_MAX_BODY) {
		lg_info("run: the command with its stdin is over the API's %u KiB: standalone",
			REMOTE_MAX_BODY >> 10);
		return stdin_give_back(steal_pointer(&in), in_len, -1, err) < 0 ? -1 : 0;
	}

	/* One request id for the create, exec and delete: the service's log lines carry it. */
	lg_random_hex(rid + 4, 8); /* the rest of rid stays NUL */
	r = create(sock, o, rid, &id, err);
	if (r == -ENOENT || r == -ECONNREFUSED) {
		/* It went away since the probe; stdin was read. */
		lg_info("run: %s: standalone", (*err)->msg);
		lg_err_free(err);
		return stdin_give_back(steal_pointer(&in), in_len, -1, err) < 0 ? -1 : 0;
	}
	if (r < 0) {
		if (lg_signals_caught() != 0) {
			lg_err_free(err);
			return interrupted(exit_code,
					   "; a sandbox may be left to the service's idle "
					   "timeout (see `luminaguard ps`)");
		}
		return lg_err_wrap(err, "the service");
	}
	if (lg_signals_caught() != 0) {
		destroy(sock, id, rid);
		return interrupted(exit_code, "; the sandbox was destroyed");
	}

	r = exec(sock, id, body_text, rid, &st, err);
	destroy(sock, id, rid);
	free(st.error);
	if (lg_signals_caught() != 0) {
		lg_err_free(err);
		return interrupted(exit_code, "; the sandbox was destroyed");
	}
	if (r < 0)
		return r;
	if (st.timed_out) {
		lg_error("the command timed out after %u s and was killed", o->timeout_s);
		*exit_code = LG_RUN_EXIT_TIMEOUT;
	} else if (st.signal != 0) {
		*exit_code = 128 + st.signal;
	} else {
		*exit_code = st.exit_code;
	}
	return 1;
}
