/* SPDX-License-Identifier: Apache-2.0 */
#include "serve/route.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static bool id_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '-';
}

/*
 * Copies the path segment at *p (up to '/' or the end) into id if it is a
 * valid id, and moves *p past it.  "." and ".." are not ids: a proxy in
 * front of us could resolve them, and then we and it would see two paths.
 */
static bool take_id(const char **p, char *id)
{
	size_t n = 0;

	while ((*p)[n] != '\0' && (*p)[n] != '/') {
		if (n >= LG_ROUTE_ID_MAX || !id_char((*p)[n]))
			return false;
		n++;
	}
	if (n == 0 || strncmp(*p, ".", n) == 0 || strncmp(*p, "..", n) == 0)
		return false;
	memcpy(id, *p, n);
	id[n] = '\0';
	*p += n;
	return true;
}

enum lg_route lg_route_parse(const char *path, struct lg_route_match *out)
{
	static const char sandboxes[] = "/v1/sandboxes", approvals[] = "/v1/approvals";
	const char *p;

	memset(out, 0, sizeof(*out));
	out->route = LG_ROUTE_NONE;
	if (path == NULL)
		return out->route;
	if (strcmp(path, "/healthz") == 0)
		return out->route = LG_ROUTE_HEALTHZ;
	if (strcmp(path, "/metrics") == 0)
		return out->route = LG_ROUTE_METRICS;
	if (strncmp(path, sandboxes, sizeof(sandboxes) - 1) == 0) {
		p = path + sizeof(sandboxes) - 1;
		if (*p == '\0')
			return out->route = LG_ROUTE_SANDBOXES;
		if (*p++ != '/' || !take_id(&p, out->id))
			goto none;
		if (*p == '\0')
			return out->route = LG_ROUTE_SANDBOX;
		if (strcmp(p, "/exec") == 0)
			return out->route = LG_ROUTE_EXEC;
		if (strcmp(p, "/files") == 0)
			return out->route = LG_ROUTE_FILES;
		goto none;
	}
	if (strncmp(path, approvals, sizeof(approvals) - 1) == 0) {
		p = path + sizeof(approvals) - 1;
		if (*p == '\0')
			return out->route = LG_ROUTE_APPROVALS;
		if (*p++ != '/' || !take_id(&p, out->id) || *p != '\0')
			goto none;
		return out->route = LG_ROUTE_APPROVAL;
	}
none:
	memset(out, 0, sizeof(*out));
	return out->route = LG_ROUTE_NONE;
}

static const struct {
	unsigned methods;
	const char *allow;
} route_methods[] = {
    [LG_ROUTE_NONE] = {0, ""},
    [LG_ROUTE_HEALTHZ] = {LG_METHOD_GET, "GET"},
    [LG_ROUTE_METRICS] = {LG_METHOD_GET, "GET"},
    [LG_ROUTE_SANDBOXES] = {LG_METHOD_GET | LG_METHOD_POST, "GET, POST"},
    [LG_ROUTE_SANDBOX] = {LG_METHOD_GET | LG_METHOD_DELETE, "GET, DELETE"},
    [LG_ROUTE_EXEC] = {LG_METHOD_POST, "POST"},
    [LG_ROUTE_FILES] = {LG_METHOD_GET | LG_METHOD_PUT, "GET, PUT"},
    [LG_ROUTE_APPROVALS] = {LG_METHOD_GET, "GET"},
    [LG_ROUTE_APPROVAL] = {LG_METHOD_GET | LG_METHOD_POST, "GET, POST"},
};

unsigned lg_route_methods(enum lg_route r)
{
	return (unsigned)r < sizeof(route_methods) / sizeof(route_methods[0])
		   ? route_methods[r].methods
		   : 0;
}

const char *lg_route_allow(enum lg_route r)
{
	return (unsigned)r < sizeof(route_methods) / sizeof(route_methods[0])
		   ? route_methods[r].allow
		   : "";
}

unsigned lg_route_method(const char *m)
{
	static const struct {
		const char *name;
		unsigned bit;
	} methods[] = {{"GET", LG_METHOD_GET},
		       {"POST", LG_METHOD_POST},
		       {"PUT", LG_METHOD_PUT},
		       {"DELETE", LG_METHOD_DELETE}};

	for (size_t i = 0; m != NULL && i < sizeof(methods) / sizeof(methods[0]); i++)
		if (strcmp(m, methods[i].name) == 0)
			return methods[i].bit;
	return 0;
}

bool lg_request_id_ok(const char *s)
{
	size_t n = 0;

	if (s == NULL)
		return false;
	for (; s[n] != '\0'; n++)
		if (n >= LG_ROUTE_ID_MAX || !id_char(s[n]))
			return false;
	return n > 0;
}

int lg_route_parse_mode(const char *s, uint32_t *out)
{
	uint32_t v = 0;
	size_t n;

	if (s == NULL || *s == '\0' || strlen(s) > 5)
		return -EINVAL;
	for (n = 0; s[n] != '\0'; n++) {
		if (s[n] < '0' || s[n] > '7')
			return -EINVAL;
		v = v * 8 + (uint32_t)(s[n] - '0');
	}
	if (v > 07777)
		return -EINVAL;
	*out = v;
	return 0;
}

int lg_route_parse_flag(const char *s, bool *out)
{
	if (s == NULL)
		return -EINVAL;
	if (strcmp(s, "1") == 0 || strcmp(s, "true") == 0)
		*out = true;
	else if (strcmp(s, "0") == 0 || strcmp(s, "false") == 0)
		*out = false;
	else
		return -EINVAL;
	return 0;
}

int lg_route_parse_bind(const char *spec, struct sockaddr_storage *sa, socklen_t *salen, char *host,
			size_t hostlen)
{
	struct sockaddr_in *in = (struct sockaddr_in *)sa;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa;
	char addr[INET6_ADDRSTRLEN + 1];
	const char *port, *end, *start;
	unsigned long p = 0;
	size_t n;

	memset(sa, 0, sizeof(*sa));
	if (spec == NULL || *spec == '\0')
		return -EINVAL;
	if (spec[0] == '[') {
		end = strchr(spec, ']');
		if (end == NULL || end[1] != ':')
			return -EINVAL;
		start = spec + 1;
		n = (size_t)(end - start);
		port = end + 2;
	} else {
		end = strrchr(spec, ':');
		if (end == NULL)
			return -EINVAL;
		start = spec;
		n = (size_t)(end - spec);
		port = end + 1;
		/* "::1:80" could mean two things: IPv6 goes in brackets. */
		if (memchr(spec, ':', n) != NULL)
			return -EINVAL;
	}
	if (n == 0 || n >= sizeof(addr) || *port == '\0' || strlen(port) > 5)
		return -EINVAL;
	for (const char *q = port; *q != '\0'; q++) {
		if (*q < '0' || *q > '9')
			return -EINVAL;
		p = p * 10 + (unsigned long)(*q - '0');
	}
	if (p > 65535)
		return -EINVAL;
	memcpy(addr, start, n);
	addr[n] = '\0';
	if (hostlen <= n + 2)
		return -EINVAL;
	if (spec[0] == '[')
		snprintf(host, hostlen, "[%s]", addr);
	else
		snprintf(host, hostlen, "%s", addr);
	if (strcmp(addr, "localhost") == 0)
		snprintf(addr, sizeof(addr), "127.0.0.1");
	if (spec[0] != '[' && inet_pton(AF_INET, addr, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)p);
		*salen = sizeof(*in);
		return 0;
	}
	if (spec[0] == '[' && inet_pton(AF_INET6, addr, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)p);
		*salen = sizeof(*in6);
		return 0;
	}
	return -EINVAL;
}

bool lg_route_bind_loopback(const struct sockaddr_storage *sa)
{
	if (sa->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	if (sa->ss_family != AF_INET6)
		return false;
	const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
	return IN6_IS_ADDR_LOOPBACK(a6) || (IN6_IS_ADDR_V4MAPPED(a6) && a6->s6_addr[12] == 127);
}
