/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzzes the serve API's request-line parsers (src/serve/route.c): the
 * path of every request, its query values (mode, flags), the client's
 * X-Request-Id, and the --http address.  Every path is a route or none;
 * an id that comes out is one the API would also accept as a request id
 * (it goes into log lines and JSON); a mode is at most 07777.
 */
#include "serve/route.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = strndup((const char *)data, size);
	struct lg_route_match m;
	struct sockaddr_storage sa;
	socklen_t salen;
	char host[64];
	uint32_t mode;
	bool flag;
	enum lg_route r;

	if (s == NULL)
		abort();
	r = lg_route_parse(s, &m);
	if (r != m.route)
		abort();
	if (r == LG_ROUTE_SANDBOX || r == LG_ROUTE_EXEC || r == LG_ROUTE_FILES ||
	    r == LG_ROUTE_APPROVAL) {
		if (!lg_request_id_ok(m.id) || strcmp(m.id, ".") == 0 || strcmp(m.id, "..") == 0)
			abort();
	} else if (m.id[0] != '\0') {
		abort();
	}
	if ((r == LG_ROUTE_NONE) != (lg_route_methods(r) == 0) || lg_route_allow(r) == NULL)
		abort();
	(void)lg_route_method(s);
	if (lg_request_id_ok(s) && (strlen(s) == 0 || strlen(s) > LG_ROUTE_ID_MAX))
		abort();
	if (lg_route_parse_mode(s, &mode) == 0 && mode > 07777)
		abort();
	(void)lg_route_parse_flag(s, &flag);
	if (lg_route_parse_bind(s, &sa, &salen, host, sizeof(host)) == 0) {
		if (sa.ss_family != AF_INET && sa.ss_family != AF_INET6)
			abort();
		(void)lg_route_bind_loopback(&sa);
	}
	free(s);
	return 0;
}
