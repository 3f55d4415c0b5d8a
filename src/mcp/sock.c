/* SPDX-License-Identifier: Apache-2.0 */
#include "mcp/sock.h"

#include "common/log.h"
#include "common/usock.h"
#include "common/util.h"
#include "mcp/stdio.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/*
 * Sessions at once: each holds a thread and its client's sandboxes, which
 * the admission budget bounds anyway; this bounds the threads.
 */
#define MAX_CONNS 64

struct conn {
	struct conn *next;
	struct mcp_sock *m;
	pthread_t thread;
	int fd;
	bool done;
};

struct mcp_sock {
	struct mcp_server *srv;
	char *path;
	dev_t dev;
	ino_t ino;
	int listen_fd;
	int stop[2]; /* readable once stopping: the accept loop and every session end */
	pthread_t thread;
	pthread_mutex_t lock;
	struct conn *conns;
	unsigned n_conns;
};

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	struct lg_err *err = NULL;

	if (mcp_stdio_serve(c->m->srv, c->fd, c->fd, c->m->stop[0], &err) < 0) {
		lg_warn("mcp socket: %s", err->msg);
		lg_err_free(&err);
	}
	shutdown(c->fd, SHUT_RDWR);
	pthread_mutex_lock(&c->m->lock);
	c->done = true;
	pthread_mutex_unlock(&c->m->lock);
	return NULL;
}

/* Joins the sessions that ended.  Under m->lock. */
static void reap_locked(struct mcp_sock *m)
{
	for (struct conn **pp = &m->conns; *pp != NULL;) {
		struct conn *c = *pp;
		if (!c->done) {
			pp = &c->next;
			continue;
		}
		*pp = c->next;
		m->n_conns--;
		pthread_join(c->thread, NULL);
		close(c->fd);
		free(c);
	}
}

static void *accept_main(void *arg)
{
	struct mcp_sock *m = arg;

	for (;;) {
		struct pollfd p[2] = {{.fd = m->listen_fd, .events = POLLIN},
				      {.fd = m->stop[0], .events = POLLIN}};
		int fd;

		if (poll(p, 2, 1000) < 0 && errno != EINTR)
			break;
		if (p[1].revents != 0)
			break;
		pthread_mutex_lock(&m->lock);
		reap_locked(m);
		pthread_mutex_unlock(&m->lock);
		if (!(p[0].revents & POLLIN))
			continue;
		fd = accept4(m->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		/* Only our uid or root may speak MCP to the service (common/usock.h). */
		if (!lg_usock_peer_ok(fd)) {
			close(fd);
			continue;
		}
		lg_set_nonblock(fd, false);
		pthread_mutex_lock(&m->lock);
		if (m->n_conns >= MAX_CONNS) {
			pthread_mutex_unlock(&m->lock);
			lg_warn("mcp socket: %d sessions open: refused one more", MAX_CONNS);
			close(fd);
			continue;
		}
		struct conn *c = xzalloc(sizeof(*c));
		c->m = m;
		c->fd = fd;
		if (pthread_create(&c->thread, NULL, conn_main, c) != 0) {
			pthread_mutex_unlock(&m->lock);
			close(fd);
			free(c);
			continue;
		}
		c->next = m->conns;
		m->conns = c;
		m->n_conns++;
		pthread_mutex_unlock(&m->lock);
	}
	return NULL;
}

int mcp_sock_start(struct mcp_server *srv, const char *path, struct mcp_sock **out,
		   struct lg_err **err)
{
	struct mcp_sock *m = xzalloc(sizeof(*m));

	m->srv = srv;
	m->stop[0] = m->stop[1] = -1;
	m->listen_fd = lg_usock_listen(path, &m->dev, &m->ino, err);
	if (m->listen_fd < 0) {
		int r = m->listen_fd;
		free(m);
		return r;
	}
	m->path = xstrdup(path);
	pthread_mutex_init(&m->lock, NULL);
	if (pipe2(m->stop, O_CLOEXEC) < 0 ||
	    pthread_create(&m->thread, NULL, accept_main, m) != 0) {
		int r = lg_err_set(err, EAGAIN, "mcp socket: cannot start its thread");
		if (m->stop[0] >= 0) {
			close(m->stop[0]);
			close(m->stop[1]);
		}
		close(m->listen_fd);
		lg_usock_unlink(path, m->dev, m->ino);
		pthread_mutex_destroy(&m->lock);
		free(m->path);
		free(m);
		return r;
	}
	*out = m;
	return 0;
}

void mcp_sock_stop(struct mcp_sock *m)
{
	if (m == NULL)
		return;
	if (write(m->stop[1], "x", 1) < 0) {
		/* cannot fail on a fresh pipe */
	}
	pthread_join(m->thread, NULL);
	close(m->listen_fd);
	lg_usock_unlink(m->path, m->dev, m->ino);
	/* Each session sees the stop pipe and closes (destroying its sandboxes). */
	pthread_mutex_lock(&m->lock);
	for (struct conn *c = m->conns; c != NULL; c = c->next)
		shutdown(c->fd, SHUT_RDWR);
	pthread_mutex_unlock(&m->lock);
	while (m->conns != NULL) {
		struct conn *c = m->conns;
		m->conns = c->next;
		pthread_join(c->thread, NULL);
		close(c->fd);
		free(c);
	}
	close(m->stop[0]);
	close(m->stop[1]);
	pthread_mutex_destroy(&m->lock);
	free(m->path);
	free(m);
}

/* Moves what is readable on from to to; 0 at EOF, 1 if it moved bytes, <0 on error. */
static int pump(int from, int to)
{
	char buf[65536];
	ssize_t n = read(from, buf, sizeof(buf));

	if (n < 0)
		return errno == EINTR || errno == EAGAIN ? 1 : -errno;
	if (n == 0)
		return 0;
	return lg_write_all(to, buf, (size_t)n) < 0 ? -EPIPE : 1;
}

int mcp_sock_bridge(const char *path, int in_fd, int out_fd, int cancel_fd, struct lg_err **err)
{
	cleanup_close int fd = lg_usock_connect(path);
	bool in_open = true;

	if (fd == -ENOENT || fd == -ECONNREFUSED)
		return 0;
	if (fd < 0)
		return lg_err_set(err, -fd, "connect to the service's MCP socket %s", path);
	lg_info("mcp: using the running service (%s)", path);
	for (;;) {
		struct pollfd p[3] = {{.fd = fd, .events = POLLIN},
				      {.fd = in_open ? in_fd : -1, .events = POLLIN},
				      {.fd = cancel_fd, .events = POLLIN}};
		int r;

		if (poll(p, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			return lg_err_sys(err, "poll");
		}
		if (p[2].revents != 0)
			return 1;
		if (p[0].revents != 0) {
			r = pump(fd, out_fd);
			if (r <= 0)
				return 1; /* the service ended the session */
		}
		if (in_open && p[1].revents != 0) {
			r = pump(in_fd, fd);
			if (r <= 0) {
				/* The client is done: the service ends the session after its
				 * answers. */
				shutdown(fd, SHUT_WR);
				in_open = false;
			}
		}
	}
}

void mcp_lines_init(struct mcp_lines *l, size_t max)
{
	memset(l, 0, sizeof(*l));
	l->max = max;
}

void mcp_lines_free(struct mcp_lines *l)
{
	free(l->buf);
	memset(l, 0, sizeof(*l));
}

#define LINES_READ 65536u

int mcp_lines_next(struct mcp_lines *l, int fd, char **line, size_t *len)
{
	for (;;) {
		char *head = l->buf + l->off;
		size_t pending = l->len - l->off;
		char *nl = pending > 0 ? memchr(head, '\n', pending) : NULL;
		ssize_t n;

		if (nl != NULL) {
			size_t k = (size_t)(nl - head);

			l->off += k + 1;
			if (k > 0 && head[k - 1] == '\r')
				k--;
			if (k > l->max)
				return -E2BIG;
			head[k] = '\0';
			*line = head;
			*len = k;
			return 1;
		}
		/* No newline yet in more than max bytes (a '\r' may still end it). */
		if (pending > l->max + 1)
			return -E2BIG;
		if (l->off > 0) {
			memmove(l->buf, head, pending);
			l->len = pending;
			l->off = 0;
		}
		if (l->cap - l->len < LINES_READ) {
			size_t cap = l->cap ? l->cap : LINES_READ;

			while (cap - l->len < LINES_READ)
				cap *= 2;
			if (cap > l->max + 2 + LINES_READ)
				cap = l->max + 2 + LINES_READ;
			l->buf = xrealloc(l->buf, cap);
			l->cap = cap;
		}
		n = read(fd, l->buf + l->len, l->cap - l->len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return 0;
		l->len += (size_t)n;
	}
}
