/* SPDX-License-Identifier: Apache-2.0 */
#include "common/usock.h"

#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int make_addr(const char *path, struct sockaddr_un *addr, struct lg_err **err)
{
	memset(addr, 0, sizeof(*addr));
	addr->sun_family = AF_UNIX;
	if (path == NULL || *path == '\0')
		return lg_err_msg(err, EINVAL, "no socket path");
	if (strlen(path) >= sizeof(addr->sun_path))
		return lg_err_msg(err, ENAMETOOLONG, "socket path `%s` is longer than %zu bytes",
				  path, sizeof(addr->sun_path) - 1);
	memcpy(addr->sun_path, path, strlen(path) + 1);
	return 0;
}

static int clear_stale(const char *path, const struct sockaddr_un *addr, struct lg_err **err)
{
	struct stat st;
	cleanup_close int fd = -1;

	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		return lg_err_sys(err, "stat `%s`", path);
	}
	if (!S_ISSOCK(st.st_mode))
		return lg_err_msg(err, EEXIST, "`%s` exists and is not a socket", path);
	/* Non-blocking: a live server with a full backlog must not hang us (EAGAIN). */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return lg_err_sys(err, "socket");
	if (connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) == 0 || errno == EAGAIN)
		return lg_err_msg(err, EADDRINUSE, "another luminaguard server is using %s", path);
	if (errno != ECONNREFUSED)
		return lg_err_sys(err, "connect to the existing socket `%s`", path);
	if (unlink(path) < 0 && errno != ENOENT)
		return lg_err_sys(err, "remove the stale socket `%s`", path);
	lg_info("removed the stale socket %s", path);
	return 0;
}

int lg_usock_listen(const char *path, dev_t *dev, ino_t *ino, struct lg_err **err)
{
	struct sockaddr_un addr;
	cleanup_free char *dir = NULL;
	cleanup_close int fd = -1;
	struct stat st;
	char *slash;
	mode_t old_umask;
	int r;

	if (path == NULL)
		return lg_err_msg(err, EINVAL, "no socket path");
	r = make_addr(path, &addr, err);
	if (r < 0)
		return r;
	dir = xstrdup(path);
	slash = strrchr(dir, '/');
	if (slash != NULL && slash != dir) {
		*slash = '\0';
		r = lg_mkdir_p(dir, 0700);
		if (r < 0)
			return lg_err_set(err, -r, "create the directory `%s`", dir);
	}
	r = clear_stale(path, &addr, err);
	if (r < 0)
		return r;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return lg_err_sys(err, "socket");
	/*
	 * bind() creates the socket file with mode 0777 & ~umask, and Linux
	 * ignores fchmod() on a socket before bind: a chmod afterwards would
	 * leave a window in which anyone could connect.  So the umask makes it
	 * 0600 from birth.  The umask is process-wide; another thread creating
	 * a file in this instant gets stricter permissions, never looser.
	 */
	old_umask = umask(0177);
	r = bind(fd, (const struct sockaddr *)&addr, sizeof(addr));
	umask(old_umask);
	if (r < 0) {
		if (errno == EADDRINUSE)
			return lg_err_msg(err, EADDRINUSE, "another luminaguard server is using %s",
					  path);
		return lg_err_sys(err, "bind `%s`", path);
	}
	if (listen(fd, 64) < 0 || stat(path, &st) < 0) {
		lg_err_sys(err, "listen on `%s`", path);
		unlink(path);
		return lg_err_code(*err);
	}
	lg_set_nonblock(fd, true);
	if (dev != NULL)
		*dev = st.st_dev;
	if (ino != NULL)
		*ino = st.st_ino;
	r = fd;
	fd = -1;
	return r;
}

void lg_usock_unlink(const char *path, dev_t dev, ino_t ino)
{
	struct stat st;

	/* A later server may own the path by now: remove only our own socket. */
	if (lstat(path, &st) == 0 && st.st_dev == dev && st.st_ino == ino)
		unlink(path);
}

bool lg_usock_peer_ok(int fd)
{
	return lg_usock_peer_ok_uid(fd, NULL);
}

bool lg_usock_peer_ok_uid(int fd, uid_t *uid)
{
	struct ucred cred;
	socklen_t clen = sizeof(cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0 || clen != sizeof(cred))
		return false;
	if (uid != NULL)
		*uid = cred.uid;
	if (cred.uid != geteuid() && cred.uid != 0) {
		lg_warn("%s: refused a connection from uid %u", "socket", (unsigned)cred.uid);
		return false;
	}
	return true;
}

int lg_usock_connect(const char *path)
{
	struct sockaddr_un addr;
	int fd, r;

	if (make_addr(path, &addr, NULL) < 0)
		return -ENAMETOOLONG;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (const struct sockaddr *)&addr, sizeof(addr)) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	return fd;
}
