/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The control socket: out-of-band decisions from `luminaguard approvals`.
 *
 * Who may decide is the whole point, so access is checked three times over:
 * the directory is 0700, the socket is 0600 from the moment it exists, and
 * every connection's peer uid (SO_PEERCRED, which the kernel fills in at
 * connect time and the client cannot forge) must be ours or root's.
 *
 * One thread serves one connection at a time: a request is one line, read
 * with a deadline, so a client that connects and says nothing holds the
 * thread for at most READ_TIMEOUT_MS, and a stop request interrupts even
 * that.
 */
#include "approval/approval.h"
#include "approval/control_req.h"

#include "common/log.h"
#include "common/paths.h"
#include "common/usock.h"
#include "common/util.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_LINE	 (64 * 1024)
#define READ_TIMEOUT_MS	 5000
#define WRITE_TIMEOUT_MS 5000

struct approval_control {
	struct approval_broker *b;
	char *path;
	int listen_fd;
	int stop_pipe[2];
	dev_t dev; /* of our socket file, so stop removes ours and nobody else's */
	ino_t ino;
	pthread_t thread;
};

char *approval_control_default_path(void)
{
	cleanup_free char *home = lg_home_dir();
	return xasprintf("%s/control.sock", home);
}

static bool stop_requested(struct approval_control *c)
{
	struct pollfd p = {.fd = c->stop_pipe[0], .events = POLLIN};
	return poll(&p, 1, 0) > 0;
}

/* Writes all of buf within WRITE_TIMEOUT_MS.  A client that does not read is dropped. */
static void send_all(int fd, const char *buf, size_t n)
{
	uint64_t deadline = lg_now_ms() + WRITE_TIMEOUT_MS;

	while (n > 0) {
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		uint64_t now = lg_now_ms();
		ssize_t w;

		if (now >= deadline || poll(&p, 1, (int)(deadline - now)) <= 0)
			return;
		/* MSG_NOSIGNAL: a client that hung up must not kill the server with SIGPIPE. */
		w = send(fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return;
		}
		buf += w;
		n -= (size_t)w;
	}
}

static void reply(int fd, json_t *resp)
{
	cleanup_free char *text = json_dumps(resp, JSON_COMPACT);

	json_decref(resp);
	if (text == NULL)
		return;
	send_all(fd, text, strlen(text));
	send_all(fd, "\n", 1);
}

static void reply_error(int fd, const char *msg)
{
	reply(fd, json_pack("{s:b, s:s}", "ok", 0, "error", msg));
}

/*
 * Reads one line (without its newline) into a new string.  Returns its
 * length, -E2BIG when longer than MAX_LINE, -ETIMEDOUT, -ECANCELED when
 * the server is stopping, or another -errno.  A line may also end at EOF.
 */
static ssize_t read_line(struct approval_control *c, int fd, char **out)
{
	cleanup_free char *buf = xmalloc(MAX_LINE + 1);
	uint64_t deadline = lg_now_ms() + READ_TIMEOUT_MS;
	size_t len = 0;

	for (;;) {
		struct pollfd p[2] = {{.fd = fd, .events = POLLIN},
				      {.fd = c->stop_pipe[0], .events = POLLIN}};
		uint64_t now = lg_now_ms();
		char *nl;
		ssize_t n;
		int r;

		if (now >= deadline)
			return -ETIMEDOUT;
		r = poll(p, 2, (int)(deadline - now));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (p[1].revents != 0)
			return -ECANCELED;
		if (r == 0)
			continue;
		n = recv(fd, buf + len, MAX_LINE + 1 - len, MSG_DONTWAIT);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return -errno;
		nl = memchr(buf + len, '\n', (size_t)n);
		if (nl != NULL) {
			len = (size_t)(nl - buf);
			break;
		}
		len += (size_t)n;
		if (len > MAX_LINE)
			return -E2BIG;
		if (n == 0 && len == 0)
			return -ECONNRESET; /* connected and left: nothing to answer */
		if (n == 0)
			break;
	}
	if (len > MAX_LINE)
		return -E2BIG;
	buf[len] = '\0';
	*out = steal_pointer(&buf);
	return (ssize_t)len;
}

/*
 * The pending requests with their cards' bulky parts (every argument, file
 * contents, the list of cuts) left out, for `list`: a card may be ~300 KiB
 * of JSON, and 1024 of them would be more than the client reads (an agent
 * filing large red actions must not be able to make the human's list fail).
 * `show ID` gives one request in full.
 */
static json_t *list_brief(struct approval_broker *b)
{
	static const char *const bulky[] = {"args", "before", "after", "omitted"};
	json_t *list = approval_list_pending(b);
	json_t *item;
	size_t i;

	json_array_foreach(list, i, item)
	{
		json_t *card = json_object_get(item, "card");
		bool cut = false;

		for (size_t k = 0; k < ARRAY_SIZE(bulky); k++)
			cut = json_object_del(card, bulky[k]) == 0 || cut;
		if (cut)
			json_object_set_new(card, "details",
					    json_string("luminaguard approvals show ID"));
	}
	return list;
}

static json_t *handle_request(struct approval_control *c, const char *line, size_t len, uid_t uid)
{
	struct control_req req;
	struct lg_err *err = NULL;
	cleanup_free char *decider = NULL;
	json_t *resp = NULL;
	json_t *shown;
	bool approve;
	char why[160];

	if (control_req_parse(line, len, &req, why, sizeof(why)) < 0)
		return json_pack("{s:b, s:s}", "ok", 0, "error", why);
	switch (req.op) {
	case CONTROL_LIST:
		resp = json_pack("{s:b, s:o}", "ok", 1, "pending", list_brief(c->b));
		break;
	case CONTROL_SHOW:
		shown = approval_show(c->b, req.id);
		if (shown == NULL)
			resp =
			    json_pack("{s:b, s:s+}", "ok", 0, "error", req.id, " is not pending");
		else
			resp = json_pack("{s:b, s:o}", "ok", 1, "approval", shown);
		break;
	case CONTROL_APPROVE:
	case CONTROL_DENY:
		approve = req.op == CONTROL_APPROVE;
		/* The uid comes from the kernel, not from the request. */
		decider = xasprintf("cli:uid=%u", (unsigned)uid);
		if (approval_decide(c->b, req.id, approve, APPROVAL_CH_CLI, decider, req.reason,
				    &err) < 0) {
			resp = json_pack("{s:b, s:s}", "ok", 0, "error", err->msg);
			lg_err_free(&err);
		} else {
			lg_info("approval %s %s by %s", req.id, approve ? "approved" : "denied",
				decider);
			resp = json_pack("{s:b}", "ok", 1);
		}
		break;
	}
	control_req_clear(&req);
	if (resp == NULL)
		resp = json_pack("{s:b, s:s}", "ok", 0, "error", "internal error");
	return resp;
}

static void serve_connection(struct approval_control *c, int fd)
{
	cleanup_free char *line = NULL;
	uid_t uid;
	ssize_t n;

	/* Only our uid or root may decide (common/usock.h says why). */
	if (!lg_usock_peer_ok_uid(fd, &uid)) {
		reply_error(fd, "permission denied");
		return;
	}
	n = read_line(c, fd, &line);
	if (n == -E2BIG) {
		reply_error(fd, "request too long (the limit is 65536 bytes)");
		return;
	}
	if (n == -ETIMEDOUT) {
		reply_error(fd, "timed out waiting for the request");
		return;
	}
	if (n < 0)
		return;
	reply(fd, handle_request(c, line, (size_t)n, uid));
}

static void *control_thread(void *arg)
{
	struct approval_control *c = arg;

	for (;;) {
		struct pollfd p[2] = {{.fd = c->listen_fd, .events = POLLIN},
				      {.fd = c->stop_pipe[0], .events = POLLIN}};
		int fd;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			lg_error("control socket: poll: %s", strerror(errno));
			break;
		}
		if (p[1].revents != 0)
			break;
		if (p[0].revents == 0)
			continue;
		fd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0)
			continue; /* EAGAIN, ECONNABORTED, or out of fds: keep serving */
		serve_connection(c, fd);
		close(fd);
		if (stop_requested(c))
			break;
	}
	return NULL;
}

/*
 * lg_usock_listen makes room for our socket at path: nothing there, or a
 * socket that nobody answers on (a server that died without cleaning up),
 * which is removed.  A live server's socket is never taken over, and a file
 * that is not a socket is never removed.
 */
int approval_control_start(struct approval_broker *b, const char *path,
			   struct approval_control **out, struct lg_err **err)
{
	cleanup_close int fd = -1;
	struct approval_control *c;
	dev_t dev;
	ino_t ino;
	int r;

	fd = lg_usock_listen(path, &dev, &ino, err);
	if (fd < 0)
		return fd;

	c = xzalloc(sizeof(*c));
	c->b = b;
	c->path = xstrdup(path);
	c->dev = dev;
	c->ino = ino;
	if (pipe2(c->stop_pipe, O_CLOEXEC) < 0) {
		lg_err_sys(err, "pipe");
		goto fail;
	}
	c->listen_fd = steal_fd(&fd);
	r = pthread_create(&c->thread, NULL, control_thread, c);
	if (r != 0) {
		lg_err_set(err, r, "start the control socket thread");
		fd = c->listen_fd;
		close(c->stop_pipe[0]);
		close(c->stop_pipe[1]);
		goto fail;
	}
	*out = c;
	return 0;
fail:
	unlink(path);
	free(c->path);
	free(c);
	return lg_err_code(*err);
}

void approval_control_stop(struct approval_control *c)
{
	if (c == NULL)
		return;
	if (write(c->stop_pipe[1], "x", 1) < 0)
		lg_warn("control socket: stop: %s", strerror(errno));
	pthread_join(c->thread, NULL);
	close(c->listen_fd);
	close(c->stop_pipe[0]);
	close(c->stop_pipe[1]);
	lg_usock_unlink(c->path, c->dev, c->ino);
	free(c->path);
	free(c);
}
