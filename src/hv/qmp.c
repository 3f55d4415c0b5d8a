/* SPDX-License-Identifier: Apache-2.0 */
#include "hv/qmp.h"

#include "common/util.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

void qmp_msg_clear(struct qmp_msg *m)
{
	json_decref(m->json);
	memset(m, 0, sizeof(*m));
}

int qmp_parse_line(const char *line, size_t len, struct qmp_msg *out, struct lg_err **err)
{
	json_error_t jerr;
	json_t *j, *v;

	memset(out, 0, sizeof(*out));
	j = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	if (j == NULL)
		return lg_err_set(err, EPROTO, "QMP: malformed JSON (%s)", jerr.text);
	if (!json_is_object(j)) {
		json_decref(j);
		return lg_err_set(err, EPROTO, "QMP: message is not an object");
	}
	out->json = j;
	if (json_object_get(j, "QMP") != NULL) {
		out->kind = QMP_GREETING;
		return 0;
	}
	if (json_object_get(j, "return") != NULL) {
		out->kind = QMP_RETURN;
		return 0;
	}
	v = json_object_get(j, "error");
	if (json_is_object(v)) {
		out->kind = QMP_ERROR;
		out->err_class = json_string_value(json_object_get(v, "class"));
		out->err_desc = json_string_value(json_object_get(v, "desc"));
		if (out->err_class == NULL)
			out->err_class = "GenericError";
		if (out->err_desc == NULL)
			out->err_desc = "(no description)";
		return 0;
	}
	v = json_object_get(j, "event");
	if (json_is_string(v)) {
		out->kind = QMP_EVENT;
		out->event = json_string_value(v);
		return 0;
	}
	qmp_msg_clear(out);
	return lg_err_set(err, EPROTO, "QMP: message of unknown kind");
}

/* Reads the next complete line into *msg, waiting at most until deadline_ms. */
static int read_msg(struct qmp *q, uint64_t deadline_ms, struct qmp_msg *msg, struct lg_err **err)
{
	for (;;) {
		const uint8_t *head = lg_buf_head(&q->in);
		size_t pending = lg_buf_pending(&q->in);
		const uint8_t *nl = pending ? memchr(head, '\n', pending) : NULL;

		if (nl != NULL) {
			size_t n = (size_t)(nl - head);
			int ret = qmp_parse_line((const char *)head, n, msg, err);
			lg_buf_consume(&q->in, n + 1);
			if (ret == 0 && msg->kind == QMP_EVENT &&
			    strcmp(msg->event, "SHUTDOWN") == 0)
				q->shutdown_seen = true;
			return ret;
		}
		if (pending >= QMP_MAX_LINE)
			return lg_err_set(err, EMSGSIZE, "QMP: line longer than %u bytes",
					  QMP_MAX_LINE);

		uint64_t now = lg_now_ms();
		if (now >= deadline_ms)
			return lg_err_set(err, ETIMEDOUT, "QMP: no reply from QEMU");
		struct pollfd pfd = {.fd = q->fd, .events = POLLIN};
		int pr = poll(&pfd, 1, (int)(deadline_ms - now));
		if (pr < 0) {
			if (errno == EINTR)
				continue;
			return lg_err_sys(err, "QMP: poll");
		}
		if (pr == 0)
			continue;
		lg_buf_reserve(&q->in, 4096);
		ssize_t r = read(q->fd, q->in.data + q->in.len, q->in.cap - q->in.len);
		if (r < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return lg_err_sys(err, "QMP: read");
		}
		if (r == 0)
			return lg_err_set(err, EPIPE, "QMP: QEMU closed the connection");
		q->in.len += (size_t)r;
	}
}

int qmp_open(struct qmp *q, int fd, int timeout_ms, struct lg_err **err)
{
	uint64_t deadline = lg_now_ms() + (uint64_t)timeout_ms;
	struct qmp_msg msg;
	int ret;

	memset(q, 0, sizeof(*q));
	q->fd = fd;
	ret = read_msg(q, deadline, &msg, err);
	if (ret < 0)
		goto fail;
	if (msg.kind != QMP_GREETING) {
		qmp_msg_clear(&msg);
		ret = lg_err_set(err, EPROTO, "QMP: expected a greeting");
		goto fail;
	}
	qmp_msg_clear(&msg);
	ret = qmp_execute(q, "qmp_capabilities", NULL, NULL, timeout_ms, err);
	if (ret < 0)
		goto fail;
	return 0;
fail:
	qmp_close(q);
	return ret;
}

/* Sends all of p with fd attached (SCM_RIGHTS) to the first byte; 0 or -errno. */
static int send_with_fd(int sock, const char *p, size_t n, int fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = {.iov_base = (void *)p, .iov_len = n};
	struct msghdr mh = {.msg_iov = &iov,
			    .msg_iovlen = 1,
			    .msg_control = u.buf,
			    .msg_controllen = sizeof(u.buf)};
	struct cmsghdr *c;
	ssize_t w;

	memset(&u, 0, sizeof(u));
	c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	do
		w = sendmsg(sock, &mh, MSG_NOSIGNAL);
	while (w < 0 && errno == EINTR);
	if (w < 0)
		return -errno;
	if ((size_t)w < n && lg_write_all(sock, p + w, n - (size_t)w) < 0)
		return -EPIPE;
	return 0;
}

int qmp_execute(struct qmp *q, const char *cmd, json_t *args, json_t **ret, int timeout_ms,
		struct lg_err **err)
{
	return qmp_execute_fd(q, cmd, args, -1, ret, timeout_ms, err);
}

int qmp_execute_fd(struct qmp *q, const char *cmd, json_t *args, int fd, json_t **ret,
		   int timeout_ms, struct lg_err **err)
{
	uint64_t deadline = lg_now_ms() + (uint64_t)timeout_ms;
	json_t *req;
	char *line;
	int r;

	if (q->fd < 0)
		return lg_err_set(err, EBADF, "QMP: not connected");
	req = json_pack("{s:s}", "execute", cmd);
	if (args != NULL)
		json_object_set(req, "arguments", args);
	line = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	if (line == NULL)
		return lg_err_set(err, ENOMEM, "QMP: cannot encode command");
	size_t n = strlen(line);
	line[n] = '\n'; /* json_dumps gives n+1 bytes; reuse the NUL for the newline */
	ssize_t w =
	    fd >= 0 ? send_with_fd(q->fd, line, n + 1, fd) : lg_write_all(q->fd, line, n + 1);
	free(line);
	if (w < 0)
		return lg_err_set(err, (int)-w, "QMP: send '%s'", cmd);

	for (;;) {
		struct qmp_msg msg;

		r = read_msg(q, deadline, &msg, err);
		if (r < 0)
			return lg_err_wrap(err, "QMP '%s'", cmd);
		switch (msg.kind) {
		case QMP_EVENT:
		case QMP_GREETING:
			qmp_msg_clear(&msg);
			continue;
		case QMP_ERROR:
			r = lg_err_msg(err, EIO, "QMP '%s' failed: %s: %s", cmd, msg.err_class,
				       msg.err_desc);
			qmp_msg_clear(&msg);
			return r;
		case QMP_RETURN:
			if (ret != NULL)
				*ret = json_incref(json_object_get(msg.json, "return"));
			qmp_msg_clear(&msg);
			return 0;
		}
	}
}

void qmp_close(struct qmp *q)
{
	if (q->fd >= 0)
		close(q->fd);
	q->fd = -1;
	lg_buf_free(&q->in);
}
