/* SPDX-License-Identifier: Apache-2.0 */
#include "common/httpd.h"

#include <microhttpd.h>

#include <poll.h>
#include <string.h>
#include <strings.h>

bool lg_secret_equal(const char *given, const char *secret)
{
	size_t lg = strlen(given), ls = strlen(secret);
	unsigned char diff = lg != ls;

	for (size_t i = 0; i < ls; i++)
		diff |= (unsigned char)secret[i] ^ (unsigned char)(i < lg ? given[i] : 0);
	return diff == 0;
}

bool lg_http_bearer_ok(const char *auth, const char *token)
{
	if (token == NULL)
		return true;
	if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0)
		return false;
	auth += 7;
	while (*auth == ' ')
		auth++;
	return lg_secret_equal(auth, token);
}

int lg_mhd_conn_fd(struct MHD_Connection *c)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
	return ci != NULL ? ci->connect_fd : -1;
}

bool lg_fd_peer_gone(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLRDHUP};

	return fd >= 0 && poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}
