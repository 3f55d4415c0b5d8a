/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The host-side egress proxy: the allowlist, the forbidden address ranges,
 * and one proxied connection from request head to the end of the relay.
 *
 * What it defends against, in order:
 *  - a destination nobody allowed: the allowlist, or a human (eg->ask);
 *  - an allowed *name* that resolves into the host's own networks (DNS
 *    pointing at 127.0.0.1, 10.x, the cloud metadata service, an address
 *    of the host's own interfaces): every resolved address is checked, and
 *    only an address/CIDR entry the host's user wrote can open such a
 *    range;
 *  - an approval as a way in: what a human approves is what the guest
 *    asked for, so an approved entry never opens a forbidden range, and an
 *    address literal in one is refused before anyone is asked;
 *  - DNS rebinding: the address that was checked is the one dialled; the
 *    name is never resolved a second time;
 *  - a request whose Host header, or a tunnel whose TLS SNI, names another
 *    host than the one checked (another virtual host on the same front);
 *  - bytes after a request's body being read upstream as a second request;
 *  - a guest that opens connections and never finishes them: every wait
 *    has a timeout and every buffer a bound.
 */
#include "net/egress.h"

#include "common/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- allowlist ---------------------------------------------------------- */

enum entry_kind { E_NAME, E_WILD, E_ADDR };

/* Port of an entry: any, the defaults (80 and 443), or one. */
#define PORT_ANY     -1
#define PORT_DEFAULT 0

struct entry {
	enum entry_kind kind;
	char name[256]; /* E_NAME: the name; E_WILD: the suffix after "*." */
	int family;	/* E_ADDR */
	uint8_t addr[16];
	unsigned prefix;
	int port;
	/*
	 * Added because a human approved a guest's request, not written by
	 * the host's user: never opens a forbidden range (match_addr).
	 */
	bool approved;
	char *text; /* as given */
};

struct lg_allowlist {
	struct entry *e;
	size_t n, cap;
};

bool lg_allowlist_has_addresses(const struct lg_allowlist *al)
{
	for (size_t i = 0; i < al->n; i++)
		if (al->e[i].kind == E_ADDR)
			return true;
	return false;
}

static bool port_ok(int entry_port, uint16_t port)
{
	if (entry_port == PORT_ANY)
		return true;
	if (entry_port == PORT_DEFAULT)
		return port == 80 || port == 443;
	return entry_port == port;
}

/* "ADDR" or "ADDR/LEN" (v4 or v6, no brackets) into e. */
static int parse_addr(const char *s, struct entry *e)
{
	char tmp[INET6_ADDRSTRLEN + 8];
	const char *slash = strchr(s, '/');
	size_t alen = slash != NULL ? (size_t)(slash - s) : strlen(s);
	uint64_t prefix;

	if (alen == 0 || alen >= INET6_ADDRSTRLEN)
		return -EINVAL;
	memcpy(tmp, s, alen);
	tmp[alen] = '\0';
	if (inet_pton(AF_INET, tmp, e->addr) == 1)
		e->family = AF_INET;
	else if (inet_pton(AF_INET6, tmp, e->addr) == 1)
		e->family = AF_INET6;
	else
		return -EINVAL;
	e->prefix = e->family == AF_INET ? 32 : 128;
	if (slash != NULL) {
		if (lg_parse_u64(slash + 1, 0, e->prefix, &prefix) < 0)
			return -EINVAL;
		e->prefix = prefix;
	}
	e->kind = E_ADDR;
	return 0;
}

static int parse_entry(const char *text, struct entry *e, struct lg_err **err)
{
	cleanup_free char *s = xstrdup(text);
	char *host = s, *port = NULL;

	memset(e, 0, sizeof(*e));
	e->port = PORT_DEFAULT;
	if (*s == '\0')
		return lg_err_msg(err, EINVAL,
				  "empty allowlist entry: give HOST, HOST:PORT or HOST:*");
	if (strstr(s, "://") != NULL)
		return lg_err_msg(err, EINVAL,
				  "allowlist entry '%s' is a URL: give the host alone, e.g. "
				  "'example.com' or 'example.com:8080'",
				  text);
	if (*s == '[') {
		char *close = strchr(s, ']');

		if (close == NULL)
			return lg_err_msg(err, EINVAL, "allowlist entry '%s': missing ']'", text);
		*close = '\0';
		host = s + 1;
		if (close[1] == ':')
			port = close + 2;
		else if (close[1] != '\0')
			return lg_err_msg(err, EINVAL,
					  "allowlist entry '%s': expected ':PORT' after ']'", text);
		if (parse_addr(host, e) < 0 || e->family != AF_INET6)
			return lg_err_msg(
			    err, EINVAL, "allowlist entry '%s': not an IPv6 address or CIDR", text);
	} else {
		char *colon = strchr(s, ':');

		/* Two colons or more: a bare IPv6 address or CIDR, no port. */
		if (colon != NULL && strchr(colon + 1, ':') != NULL) {
			if (parse_addr(s, e) < 0 || e->family != AF_INET6)
				return lg_err_msg(err, EINVAL,
						  "allowlist entry '%s': not an IPv6 address or "
						  "CIDR (write [ADDR]:PORT to give a port)",
						  text);
		} else {
			if (colon != NULL) {
				*colon = '\0';
				port = colon + 1;
			}
			if (strchr(host, '/') != NULL || parse_addr(host, e) == 0) {
				if (parse_addr(host, e) < 0 || e->family != AF_INET)
					return lg_err_msg(err, EINVAL,
							  "allowlist entry '%s': bad address or "
							  "CIDR",
							  text);
			} else if (strncmp(host, "*.", 2) == 0) {
				e->kind = E_WILD;
				if (lg_dns_name_canon(host + 2, strlen(host + 2), e->name,
						      sizeof(e->name)) < 0 ||
				    strchr(e->name, '.') == NULL)
					return lg_err_msg(err, EINVAL,
							  "allowlist entry '%s': a wildcard is "
							  "'*.DOMAIN' with a DOMAIN of two labels "
							  "or more",
							  text);
			} else {
				e->kind = E_NAME;
				if (lg_dns_name_canon(host, strlen(host), e->name,
						      sizeof(e->name)) < 0)
					return lg_err_msg(
					    err, EINVAL,
					    "allowlist entry '%s': '%s' is not a host name "
					    "(letters, digits, '-', labels separated by single "
					    "dots; a wildcard only as '*.DOMAIN')",
					    text, host);
			}
		}
	}
	if (port != NULL) {
		uint64_t v;

		if (strcmp(port, "*") == 0)
			e->port = PORT_ANY;
		else if (lg_parse_u64(port, 1, 65535, &v) == 0)
			e->port = v;
		else
			return lg_err_msg(
			    err, EINVAL, "allowlist entry '%s': port must be 1-65535 or '*'", text);
	}
	e->text = xstrdup(text);
	return 0;
}

static int allowlist_add(struct lg_allowlist *al, const char *entry, bool approved,
			 struct lg_err **err)
{
	struct entry e;
	cleanup_free char *t = NULL;
	size_t n = strlen(entry);
	int r;

	/* Spaces around an entry are the list's formatting, not the entry's. */
	while (n > 0 && (*entry == ' ' || *entry == '\t'))
		entry++, n--;
	while (n > 0 && (entry[n - 1] == ' ' || entry[n - 1] == '\t'))
		n--;
	t = strndup(entry, n);
	if (t == NULL)
		abort();
	r = parse_entry(t, &e, err);
	if (r < 0)
		return r;
	e.approved = approved;
	if (al->n == al->cap) {
		al->cap = al->cap ? al->cap * 2 : 8;
		al->e = xrealloc(al->e, al->cap * sizeof(*al->e));
	}
	al->e[al->n++] = e;
	return 0;
}

int lg_allowlist_add(struct lg_allowlist *al, const char *entry, struct lg_err **err)
{
	return allowlist_add(al, entry, false, err);
}

int lg_allowlist_add_approved(struct lg_allowlist *al, const char *entry, struct lg_err **err)
{
	return allowlist_add(al, entry, true, err);
}

int lg_net_opt_parse(const char *arg, const char **allow, struct lg_err **err)
{
	if (strcmp(arg, "none") == 0) {
		*allow = NULL;
		return 0;
	}
	if (strncmp(arg, "allow=", 6) != 0 || arg[6] == '\0')
		return lg_err_msg(err, EINVAL, "--net: '%s' is not none or allow=HOST[,HOST...]",
				  arg);
	/* Checked now: a typo is a usage error, not a sandbox that fails later. */
	struct lg_allowlist *al = NULL;
	if (lg_allowlist_parse(arg + 6, &al, err) < 0)
		return lg_err_wrap(err, "--net");
	lg_allowlist_free(al);
	*allow = arg + 6;
	return 0;
}

struct lg_allowlist *lg_allowlist_new(void)
{
	return xzalloc(sizeof(struct lg_allowlist));
}

int lg_allowlist_parse(const char *spec, struct lg_allowlist **out, struct lg_err **err)
{
	struct lg_allowlist *al = xzalloc(sizeof(*al));
	const char *p = spec;

	for (;;) {
		const char *comma = strchr(p, ',');
		size_t n = comma != NULL ? (size_t)(comma - p) : strlen(p);
		cleanup_free char *item = strndup(p, n);
		int r;

		if (item == NULL)
			abort();
		r = lg_allowlist_add(al, item, err);
		if (r < 0) {
			lg_allowlist_free(al);
			return r;
		}
		if (comma == NULL)
			break;
		p = comma + 1;
	}
	*out = al;
	return 0;
}

/* Does name (canonical) lie strictly below suffix? */
static bool below(const char *name, const char *suffix)
{
	size_t n = strlen(name), s = strlen(suffix);

	return n > s + 1 && name[n - s - 1] == '.' && strcmp(name + n - s, suffix) == 0;
}

static bool addr_in(const struct entry *e, int family, const uint8_t *a)
{
	unsigned full = e->prefix / 8, rest = e->prefix % 8;

	if (e->family != family)
		return false;
	if (memcmp(e->addr, a, full) != 0)
		return false;
	if (rest == 0)
		return true;
	return ((e->addr[full] ^ a[full]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

/* host_written_only: only entries the host's user wrote count. */
static bool match_addr(const struct lg_allowlist *al, int family, const uint8_t *a, uint16_t port,
		       bool host_written_only)
{
	for (size_t i = 0; i < al->n; i++)
		if (al->e[i].kind == E_ADDR && port_ok(al->e[i].port, port) &&
		    addr_in(&al->e[i], family, a) && !(host_written_only && al->e[i].approved))
			return true;
	return false;
}

bool lg_allowlist_match_host(const struct lg_allowlist *al, const char *host, uint16_t port)
{
	char name[256];
	uint8_t a[16];

	/* An address literal matches address entries only. */
	if (inet_pton(AF_INET, host, a) == 1)
		return match_addr(al, AF_INET, a, port, false);
	if (inet_pton(AF_INET6, host, a) == 1)
		return match_addr(al, AF_INET6, a, port, false);
	if (lg_dns_name_canon(host, strlen(host), name, sizeof(name)) < 0)
		return false;
	for (size_t i = 0; i < al->n; i++) {
		const struct entry *e = &al->e[i];

		if (!port_ok(e->port, port))
			continue;
		if (e->kind == E_NAME && strcmp(e->name, name) == 0)
			return true;
		if (e->kind == E_WILD && below(name, e->name))
			return true;
	}
	return false;
}

bool lg_allowlist_match_addr(const struct lg_allowlist *al, const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;

		return match_addr(al, AF_INET, (const uint8_t *)&s4->sin_addr, ntohs(s4->sin_port),
				  true);
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;

		return match_addr(al, AF_INET6, s6->sin6_addr.s6_addr, ntohs(s6->sin6_port), true);
	}
	return false;
}

#define APPROVED_MARK " (approved)"

char *lg_allowlist_str(const struct lg_allowlist *al)
{
	size_t len = 1;
	char *s;

	for (size_t i = 0; i < al->n; i++)
		len += strlen(al->e[i].text) + 2 + strlen(APPROVED_MARK);
	s = xmalloc(len);
	s[0] = '\0';
	for (size_t i = 0; i < al->n; i++) {
		if (i > 0)
			strcat(s, ", ");
		strcat(s, al->e[i].text);
		if (al->e[i].approved)
			strcat(s, APPROVED_MARK);
	}
	return s;
}

void lg_allowlist_free(struct lg_allowlist *al)
{
	if (al == NULL)
		return;
	for (size_t i = 0; i < al->n; i++)
		free(al->e[i].text);
	free(al->e);
	free(al);
}

/* ---- forbidden ranges --------------------------------------------------- */

struct range4 {
	uint32_t net;
	unsigned len;
	const char *why;
};

/* IANA IPv4 special-purpose registry, the parts not globally reachable. */
static const struct range4 forbidden4[] = {
    {0x00000000, 8, "unspecified / 'this network' (0.0.0.0/8)"},
    {0x0a000000, 8, "private (RFC 1918, 10.0.0.0/8)"},
    {0x64400000, 10, "carrier-grade NAT (RFC 6598, 100.64.0.0/10)"},
    {0x7f000000, 8, "loopback (127.0.0.0/8)"},
    {0xa9fea9fe, 32, "the cloud metadata service (169.254.169.254)"},
    {0xa9fe0000, 16, "link-local (169.254.0.0/16)"},
    {0xac100000, 12, "private (RFC 1918, 172.16.0.0/12)"},
    {0xc0000000, 24, "reserved (IETF protocol assignments, 192.0.0.0/24)"},
    {0xc0000200, 24, "reserved (documentation, 192.0.2.0/24)"},
    {0xc0586300, 24, "reserved (6to4 relay anycast, 192.88.99.0/24)"},
    {0xc0a80000, 16, "private (RFC 1918, 192.168.0.0/16)"},
    {0xc6120000, 15, "reserved (benchmarking, 198.18.0.0/15)"},
    {0xc6336400, 24, "reserved (documentation, 198.51.100.0/24)"},
    {0xcb007100, 24, "reserved (documentation, 203.0.113.0/24)"},
    {0xe0000000, 4, "multicast (224.0.0.0/4)"},
    {0xffffffff, 32, "broadcast (255.255.255.255)"},
    {0xf0000000, 4, "reserved (240.0.0.0/4)"},
};

static bool forbidden4_addr(uint32_t a, const char **why)
{
	for (size_t i = 0; i < ARRAY_SIZE(forbidden4); i++) {
		uint32_t mask =
		    forbidden4[i].len == 0 ? 0 : 0xffffffffu << (32 - forbidden4[i].len);

		if ((a & mask) == forbidden4[i].net) {
			*why = forbidden4[i].why;
			return true;
		}
	}
	return false;
}

static uint32_t be32_at(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static bool forbidden6_addr(const uint8_t *a, const char **why)
{
	static const uint8_t zero[16];
	static const uint8_t nat64[12] = {0x00, 0x64, 0xff, 0x9b};

	if (memcmp(a, zero, 16) == 0) {
		*why = "unspecified (::)";
		return true;
	}
	if (memcmp(a, zero, 15) == 0 && a[15] == 1) {
		*why = "loopback (::1)";
		return true;
	}
	/*
	 * Forms that carry an IPv4 address, which the kernel (or a NAT64 or
	 * 6to4 gateway) may deliver to that IPv4 address: judged by it.
	 * ::ffff:a.b.c.d (mapped), ::a.b.c.d (compatible, deprecated),
	 * ::ffff:0:a.b.c.d (SIIT), 64:ff9b::a.b.c.d (NAT64 well-known).
	 */
	if ((memcmp(a, zero, 10) == 0 && a[10] == 0xff && a[11] == 0xff) ||
	    memcmp(a, zero, 12) == 0 ||
	    (memcmp(a, zero, 8) == 0 && a[8] == 0xff && a[9] == 0xff && a[10] == 0 && a[11] == 0) ||
	    memcmp(a, nat64, 12) == 0) {
		if (forbidden4_addr(be32_at(a + 12), why))
			return true;
		/* A public IPv4 address in one of these forms is fine. */
		return false;
	}
	if (a[0] == 0x20 && a[1] == 0x02) {
		/* 6to4: 2002:AABB:CCDD::/48 stands for AA.BB.CC.DD. */
		if (forbidden4_addr(be32_at(a + 2), why))
			return true;
		return false;
	}
	if (a[0] == 0x00 && a[1] == 0x64 && a[2] == 0xff && a[3] == 0x9b && a[4] == 0x00 &&
	    a[5] == 0x01) {
		*why = "local-use NAT64 (64:ff9b:1::/48)";
		return true;
	}
	if ((a[0] & 0xfe) == 0xfc) {
		*why = "IPv6 unique local (fc00::/7)";
		return true;
	}
	if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) {
		*why = "IPv6 link-local (fe80::/10)";
		return true;
	}
	if (a[0] == 0xfe && (a[1] & 0xc0) == 0xc0) {
		*why = "IPv6 site-local (fec0::/10, deprecated)";
		return true;
	}
	if (a[0] == 0xff) {
		*why = "IPv6 multicast (ff00::/8)";
		return true;
	}
	if (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0x0d && a[3] == 0xb8) {
		*why = "reserved (IPv6 documentation, 2001:db8::/32)";
		return true;
	}
	if (a[0] == 0x20 && a[1] == 0x01 && a[2] < 0x02) {
		*why = "reserved (IETF special-purpose incl. Teredo, 2001::/23)";
		return true;
	}
	/* Everything outside 2000::/3 is not global unicast. */
	if ((a[0] & 0xe0) != 0x20) {
		*why = "reserved (not IPv6 global unicast 2000::/3)";
		return true;
	}
	return false;
}

bool lg_addr_forbidden(const struct sockaddr *sa, const char **why)
{
	const char *dummy;

	if (why == NULL)
		why = &dummy;
	if (sa->sa_family == AF_INET)
		return forbidden4_addr(ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr),
				       why);
	if (sa->sa_family == AF_INET6)
		return forbidden6_addr(((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr, why);
	*why = "not an IP address";
	return true;
}

/* The IPv4 address an IPv4-mapped IPv6 address (::ffff:a.b.c.d) carries. */
static bool v4_mapped(const uint8_t *a6, uint8_t out[4])
{
	static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	if (memcmp(a6, prefix, sizeof(prefix)) != 0)
		return false;
	memcpy(out, a6 + 12, 4);
	return true;
}

bool lg_addr_on_host(const struct sockaddr *sa)
{
	struct ifaddrs *ifs = NULL;
	uint8_t want[16];
	int family;
	bool found = false;

	if (sa->sa_family == AF_INET) {
		family = AF_INET;
		memcpy(want, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		const uint8_t *a6 = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;

		family = v4_mapped(a6, want) ? AF_INET : AF_INET6;
		if (family == AF_INET6)
			memcpy(want, a6, 16);
	} else {
		return false;
	}
	/*
	 * Cannot list them: say yes.  Refusing a connection by mistake is a
	 * 403 the user sees; reaching the host by mistake is the hole this
	 * check closes.
	 */
	if (getifaddrs(&ifs) < 0)
		return true;
	for (struct ifaddrs *i = ifs; i != NULL && !found; i = i->ifa_next) {
		const struct sockaddr *ia = i->ifa_addr;

		if (ia == NULL || ia->sa_family != family)
			continue;
		if (family == AF_INET)
			found = memcmp(&((const struct sockaddr_in *)ia)->sin_addr, want, 4) == 0;
		else
			found = memcmp(((const struct sockaddr_in6 *)ia)->sin6_addr.s6_addr, want,
				       16) == 0;
	}
	freeifaddrs(ifs);
	return found;
}

/*
 * May the sandbox reach sa (whose port is set)?  Not when it lies in a
 * forbidden range or is one of this host's own addresses, unless an
 * address entry the host's user wrote covers it.  *why names the range.
 */
static bool addr_refused(struct lg_egress *eg, const struct sockaddr *sa, const char **why)
{
	bool host_written;

	pthread_mutex_lock(&eg->lock);
	host_written = lg_allowlist_match_addr(eg->allow, sa);
	pthread_mutex_unlock(&eg->lock);
	if (host_written)
		return false;
	if (lg_addr_forbidden(sa, why))
		return true;
	if (lg_addr_on_host(sa)) {
		*why = "an address of this host's own network interfaces";
		return true;
	}
	return false;
}

/* RFC 6761: "localhost" and the names below it are the host itself. */
static bool is_localhost_name(const char *host)
{
	char name[256];

	return lg_dns_name_canon(host, strlen(host), name, sizeof(name)) == 0 &&
	       (strcmp(name, "localhost") == 0 || below(name, "localhost"));
}

const char *lg_egress_dest_note(const char *host)
{
	uint8_t a[16];

	if (inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1)
		return "It is a public IP address (not this host, its loopback or a private "
		       "network; those are refused without asking): approving opens this address "
		       "and port for this sandbox only.";
	if (is_localhost_name(host))
		return "'localhost' is this host itself: approving it cannot open the host's "
		       "loopback, which only an address in the allowlist written on the host can "
		       "(the connection is refused whatever the answer otherwise).";
	return "It is a host name, resolved only after approval: if it resolves to this host "
	       "(loopback or one of its own addresses) or to a private, link-local or "
	       "cloud-metadata address, the connection is refused whatever the answer.";
}

/* ---- the proxy ---------------------------------------------------------- */

#define DEFAULT_CONNECT_MS 10000
#define DEFAULT_IDLE_MS	   300000
#define DEFAULT_HEAD_MS	   30000
#define RELAY_BUF	   65536
#define MAX_ADDRS	   16

void lg_egress_init(struct lg_egress *eg, struct lg_allowlist *allow)
{
	memset(eg, 0, sizeof(*eg));
	eg->allow = allow;
	pthread_mutex_init(&eg->lock, NULL);
}

void lg_egress_fini(struct lg_egress *eg)
{
	pthread_mutex_destroy(&eg->lock);
}

struct conn {
	struct lg_egress *eg;
	int cfd, sfd;
	struct lg_http_req req;
	enum lg_egress_verdict verdict;
	char reason[512];
	bool has_reason;
	char addr[INET6_ADDRSTRLEN];
	uint64_t up, down;
};

static void set_reason(struct conn *c, enum lg_egress_verdict v, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_reasonv(struct conn *c, enum lg_egress_verdict v, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

static void set_reasonv(struct conn *c, enum lg_egress_verdict v, const char *fmt, va_list ap)
{
	c->verdict = v;
	vsnprintf(c->reason, sizeof(c->reason), fmt, ap);
	c->has_reason = true;
}

static void set_reason(struct conn *c, enum lg_egress_verdict v, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	set_reasonv(c, v, fmt, ap);
	va_end(ap);
}

static int send_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;

	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			struct pollfd pfd = {.fd = fd, .events = POLLOUT};

			if (poll(&pfd, 1, 10000) <= 0)
				return -ETIMEDOUT;
			continue;
		}
		if (w < 0)
			return -errno;
		p += w;
		n -= w;
	}
	return 0;
}

/* An answer of our own: status line and a one-line text body. */
static void reply(struct conn *c, const char *status, const char *body)
{
	cleanup_free char *msg =
	    xasprintf("HTTP/1.1 %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
		      "Content-Length: %zu\r\nConnection: close\r\n\r\n%s\n",
		      status, strlen(body) + 1, body);

	send_all(c->cfd, msg, strlen(msg));
}

static void deny(struct conn *c, const char *status, enum lg_egress_verdict v, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void deny(struct conn *c, const char *status, enum lg_egress_verdict v, const char *fmt, ...)
{
	cleanup_free char *body = NULL;
	va_list ap;

	va_start(ap, fmt);
	set_reasonv(c, v, fmt, ap);
	va_end(ap);
	body = xasprintf("luminaguard: %s", c->reason);
	reply(c, status, body);
}

/* HOST:PORT as an allowlist entry (IPv6 in brackets). */
static char *host_port(const char *host, uint16_t port)
{
	if (strchr(host, ':') != NULL)
		return xasprintf("[%s]:%u", host, port);
	return xasprintf("%s:%u", host, port);
}

static void addr_str(const struct sockaddr *sa, char *out, size_t n)
{
	const void *a = sa->sa_family == AF_INET
			    ? (const void *)&((const struct sockaddr_in *)sa)->sin_addr
			    : (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr;

	if (inet_ntop(sa->sa_family, a, out, n) == NULL)
		snprintf(out, n, "?");
}

/*
 * The request's host as an address, when it is one: a literal (IPv4 or
 * IPv6), or an IPv4 address in a legacy notation that the resolver
 * would read as one ("127.1", "2130706433", "0x7f.1": inet_aton forms),
 * which *legacy is set for.
 */
static bool host_as_addr(const struct conn *c, struct sockaddr_storage *ss, bool *legacy)
{
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	*legacy = false;
	if (inet_pton(AF_INET6, c->req.host, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(c->req.port);
		return true;
	}
	s4->sin_family = AF_INET;
	s4->sin_port = htons(c->req.port);
	if (inet_pton(AF_INET, c->req.host, &s4->sin_addr) == 1)
		return true;
	if (inet_aton(c->req.host, &s4->sin_addr) != 0) {
		*legacy = true;
		return true;
	}
	return false;
}

/*
 * Is the destination allowed, by the allowlist or by a human?  0, or -1
 * after the client had its 403.
 */
static int host_allowed(struct conn *c)
{
	struct lg_egress *eg = c->eg;
	struct sockaddr_storage ss;
	const char *why = NULL;
	bool ok, legacy;

	if (host_as_addr(c, &ss, &legacy)) {
		if (legacy) {
			addr_str((struct sockaddr *)&ss, c->addr, sizeof(c->addr));
			deny(c, "403 Forbidden", LG_EGRESS_DENIED,
			     "%s is the IPv4 address %s in a legacy notation; write it as %s",
			     c->req.host, c->addr, c->addr);
			return -1;
		}
		/*
		 * Before the allowlist and before anyone is asked: an
		 * approval cannot open this address, so asking would only
		 * show a human a question whose yes means nothing (or, before
		 * this check, a yes that opened the host's loopback).
		 */
		if (addr_refused(eg, (struct sockaddr *)&ss, &why)) {
			addr_str((struct sockaddr *)&ss, c->addr, sizeof(c->addr));
			deny(c, "403 Forbidden", LG_EGRESS_DENIED,
			     "%s:%u is %s: a sandbox may not reach it, and no approval can open it "
			     "(only an address entry written on the host, --net allow=, can)",
			     c->req.host, c->req.port, why);
			return -1;
		}
	}
	pthread_mutex_lock(&eg->lock);
	ok = lg_allowlist_match_host(eg->allow, c->req.host, c->req.port);
	pthread_mutex_unlock(&eg->lock);
	if (ok)
		return 0;
	/* The approval cliff: not under the lock, a human may take minutes. */
	if (eg->ask == NULL || !eg->ask(eg->ask_ctx, c->req.host, c->req.port)) {
		deny(c, "403 Forbidden", LG_EGRESS_DENIED,
		     "%s:%u is not on this sandbox's allowlist", c->req.host, c->req.port);
		return -1;
	}
	{
		cleanup_free char *entry = host_port(c->req.host, c->req.port);
		struct lg_err *err = NULL;

		pthread_mutex_lock(&eg->lock);
		if (lg_allowlist_add_approved(eg->allow, entry, &err) < 0)
			lg_err_free(&err); /* cannot happen: host and port were parsed */
		pthread_mutex_unlock(&eg->lock);
	}
	return 0;
}

static int wait_fd(int fd, short events, int timeout_ms)
{
	struct pollfd pfd = {.fd = fd, .events = events};
	int r;

	do
		r = poll(&pfd, 1, timeout_ms);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	return r == 0 ? -ETIMEDOUT : 0;
}

static int dial_one(const struct sockaddr *sa, socklen_t salen, int timeout_ms)
{
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int r, soerr = 0;
	socklen_t sl = sizeof(soerr);

	if (fd < 0)
		return -errno;
	r = connect(fd, sa, salen);
	if (r < 0 && errno != EINPROGRESS) {
		r = -errno;
		close(fd);
		return r;
	}
	if (r < 0) {
		r = wait_fd(fd, POLLOUT, timeout_ms);
		if (r == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
			r = -errno;
		else if (r == 0 && soerr != 0)
			r = -soerr;
		if (r < 0) {
			close(fd);
			return r;
		}
	}
	return fd;
}

/*
 * Resolves the host here (never in the guest), checks each address, and
 * dials the first that is allowed and answers.  On failure the client has
 * had its 403 or 502.
 */
static int dial(struct conn *c)
{
	struct lg_egress *eg = c->eg;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_protocol = IPPROTO_TCP},
			*res = NULL;
	char port[8], refused_addr[INET6_ADDRSTRLEN] = "";
	const char *refused_why = NULL;
	int timeout = eg->connect_timeout_ms > 0 ? eg->connect_timeout_ms : DEFAULT_CONNECT_MS;
	int r, last_err = 0, tried = 0;

	snprintf(port, sizeof(port), "%u", c->req.port);
	/*
	 * No second resolution ever happens: the address checked below is the
	 * address connected to, so a name cannot be re-pointed (DNS
	 * rebinding) between check and use.
	 */
	r = getaddrinfo(c->req.host, port, &hints, &res);
	if (r != 0) {
		deny(c, "502 Bad Gateway", LG_EGRESS_FAILED, "cannot resolve %s: %s", c->req.host,
		     r == EAI_SYSTEM ? strerror(errno) : gai_strerror(r));
		return -1;
	}
	for (struct addrinfo *ai = res; ai != NULL && tried < MAX_ADDRS; ai = ai->ai_next) {
		const char *why = NULL;
		char a[INET6_ADDRSTRLEN];

		if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
			continue;
		tried++;
		addr_str(ai->ai_addr, a, sizeof(a));
		/*
		 * An allowed (or approved) *name* does not open the host's own
		 * networks: whoever controls the name's DNS could point it
		 * anywhere.  Only an address/CIDR entry written on the host,
		 * by a person who meant that address, does; an approved one
		 * does not (the guest chose what the human was shown).
		 */
		if (addr_refused(eg, ai->ai_addr, &why)) {
			if (refused_why == NULL) {
				refused_why = why;
				snprintf(refused_addr, sizeof(refused_addr), "%s", a);
			}
			continue;
		}
		r = dial_one(ai->ai_addr, ai->ai_addrlen, timeout);
		snprintf(c->addr, sizeof(c->addr), "%s", a);
		if (r >= 0) {
			c->sfd = r;
			freeaddrinfo(res);
			return 0;
		}
		last_err = -r;
	}
	freeaddrinfo(res);
	if (last_err != 0) {
		deny(c, "502 Bad Gateway", LG_EGRESS_FAILED, "cannot connect to %s:%u (%s): %s",
		     c->req.host, c->req.port, c->addr,
		     last_err == ETIMEDOUT ? "timed out" : strerror(last_err));
		return -1;
	}
	if (refused_why != NULL) {
		snprintf(c->addr, sizeof(c->addr), "%s", refused_addr);
		deny(c, "403 Forbidden", LG_EGRESS_DENIED,
		     "%s resolves to %s, %s, which a sandbox may not reach unless that address "
		     "is on the allowlist",
		     c->req.host, refused_addr, refused_why);
		return -1;
	}
	deny(c, "502 Bad Gateway", LG_EGRESS_FAILED, "%s has no IPv4 or IPv6 address", c->req.host);
	return -1;
}

struct buf {
	uint8_t *d;
	size_t cap, off, len; /* pending bytes: d[off .. off+len) */
};

static size_t room(const struct buf *b)
{
	return b->cap - b->off - b->len;
}

static void compact(struct buf *b)
{
	if (b->len == 0)
		b->off = 0;
}

/* Writes what it can of b to fd; -errno on a dead peer. */
static int flush(int fd, struct buf *b, uint64_t *count)
{
	while (b->len > 0) {
		ssize_t w = send(fd, b->d + b->off, b->len, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (w < 0)
			return -errno;
		b->off += w;
		b->len -= w;
		*count += w;
	}
	compact(b);
	return 0;
}

/*
 * Checks the start of a tunnel: a TLS ClientHello's SNI must name the
 * CONNECT host.  Otherwise a tunnel to an allowed front (a CDN, a shared
 * load balancer) could ask it for any other site it serves.  Returns 1
 * when decided and allowed, 0 when more bytes are needed, -1 when denied.
 */
static int check_sni(struct conn *c, const struct buf *b, bool full)
{
	char sni[256];
	int r = lg_tls_sni(b->d + b->off, b->len, sni, sizeof(sni));

	if (r == 1) {
		if (strcmp(sni, c->req.host) == 0)
			return 1;
		set_reason(c, LG_EGRESS_DENIED, "SNI %s does not match CONNECT host %s", sni,
			   c->req.host);
		return -1;
	}
	if (r == -ENOENT || r == -EINVAL)
		return 1; /* no SNI (an address), or not TLS: the destination was checked */
	if (r == 0 && !full)
		return 0;
	set_reason(c, LG_EGRESS_DENIED, "%s",
		   r == 0 ? "TLS ClientHello too large to check"
			  : "malformed TLS ClientHello at the start of the tunnel");
	return -1;
}

/*
 * Relays both ways until both sides have closed, with non-blocking sockets
 * and a buffer per direction (blocking writes could deadlock: each side
 * waiting for the other to read).  A side's EOF is passed on as
 * shutdown(SHUT_WR) once its buffered bytes are out.
 */
static void relay(struct conn *c, struct buf *up, bool inspect, struct lg_http_body *body)
{
	int idle = c->eg->idle_timeout_ms > 0 ? c->eg->idle_timeout_ms : DEFAULT_IDLE_MS;
	struct buf down = {.d = xmalloc(RELAY_BUF), .cap = RELAY_BUF};
	bool c_eof = false, s_eof = false, s_shut = false, c_shut = false;
	int pending = inspect ? 0 : 1;

	lg_set_nonblock(c->cfd, true);
	lg_set_nonblock(c->sfd, true);
	if (inspect && up->len > 0) {
		pending = check_sni(c, up, room(up) == 0);
		if (pending < 0)
			goto out;
	}
	for (;;) {
		struct pollfd p[2] = {{.fd = c->cfd}, {.fd = c->sfd}};
		int r;

		if (!c_eof && room(up) > 0)
			p[0].events |= POLLIN;
		if (down.len > 0)
			p[0].events |= POLLOUT;
		if (!s_eof && room(&down) > 0)
			p[1].events |= POLLIN;
		if (up->len > 0 && pending == 1)
			p[1].events |= POLLOUT;
		if (c_eof && up->len == 0 && !s_shut) {
			shutdown(c->sfd, SHUT_WR);
			s_shut = true;
		}
		if (s_eof && down.len == 0 && !c_shut) {
			shutdown(c->cfd, SHUT_WR);
			c_shut = true;
		}
		if (s_shut && c_shut)
			break;
		/*
		 * A forwarded request is over when the response is: the server
		 * was told Connection: close, and nothing more the client sends
		 * would go anywhere.
		 */
		if (body != NULL && c_shut)
			break;
		if (p[0].events == 0 && p[1].events == 0)
			break;
		/* A closed side still reports POLLHUP: ignore it while idle. */
		if (p[0].events == 0)
			p[0].fd = -1;
		if (p[1].events == 0)
			p[1].fd = -1;
		r = poll(p, 2, idle);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break; /* idle timeout, or poll failed */

		if (p[0].revents & (POLLIN | POLLHUP | POLLERR) && !c_eof && room(up) > 0) {
			ssize_t n = recv(c->cfd, up->d + up->off + up->len, room(up), 0);

			if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
				/* nothing */
			} else if (n <= 0) {
				c_eof = true;
				/* Nothing sent at all: nothing to check, pass the EOF on. */
				if (pending == 0 && up->len == 0)
					pending = 1;
				if (pending == 0) {
					set_reason(c, LG_EGRESS_DENIED,
						   "client closed the tunnel in the middle of a "
						   "TLS ClientHello");
					break;
				}
			} else {
				if (body != NULL) {
					/* Bytes after the body are not the server's. */
					ssize_t k =
					    lg_http_body_feed(body, up->d + up->off + up->len, n);

					if (k < 0) {
						set_reason(c, LG_EGRESS_FAILED,
							   "malformed chunked request body");
						break;
					}
					n = k;
				}
				up->len += n;
				if (pending == 0) {
					pending = check_sni(c, up, room(up) == 0);
					if (pending < 0)
						break;
				}
			}
		}
		if (p[1].revents & (POLLIN | POLLHUP | POLLERR) && !s_eof && room(&down) > 0) {
			ssize_t n = recv(c->sfd, down.d + down.off + down.len, room(&down), 0);

			if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
				/* nothing */
			} else if (n <= 0) {
				s_eof = true;
			} else {
				down.len += n;
			}
		}
		if (pending == 1 && flush(c->sfd, up, &c->up) < 0)
			break;
		if (flush(c->cfd, &down, &c->down) < 0)
			break;
	}
out:
	free(down.d);
}

static int read_head(struct conn *c, struct buf *b)
{
	int timeout = c->eg->head_timeout_ms > 0 ? c->eg->head_timeout_ms : DEFAULT_HEAD_MS;
	uint64_t deadline = lg_now_ms() + timeout;

	for (;;) {
		int r = lg_http_parse_request((const char *)b->d, b->len, &c->req);
		uint64_t now;
		ssize_t n;

		if (r > 0)
			return r;
		if (r < 0) {
			deny(c, "400 Bad Request", LG_EGRESS_FAILED, "bad proxy request: %s",
			     c->req.error ? c->req.error : "malformed");
			return -1;
		}
		now = lg_now_ms();
		if (now >= deadline || wait_fd(c->cfd, POLLIN, deadline - now) == -ETIMEDOUT) {
			deny(c, "408 Request Timeout", LG_EGRESS_FAILED,
			     "no complete request head within %d ms", timeout);
			return -1;
		}
		n = recv(c->cfd, b->d + b->len, LG_HTTP_MAX_HEAD - b->len, 0);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0) {
			set_reason(c, LG_EGRESS_FAILED, "client closed before a complete request");
			return -1;
		}
		b->len += n;
	}
}

void lg_egress_serve(struct lg_egress *eg, int client_fd)
{
	struct conn c = {.eg = eg, .cfd = client_fd, .sfd = -1, .verdict = LG_EGRESS_ALLOWED};
	struct buf up = {0};
	struct lg_http_body body;
	struct lg_egress_event ev;
	size_t head_len;
	int r;

	lg_set_nonblock(client_fd, false);
	/* Room for the head, or a whole ClientHello while the SNI is checked. */
	up.cap = LG_TLS_MAX_HELLO + 16384 + 5;
	up.d = xmalloc(up.cap);
	r = read_head(&c, &up);
	if (r < 0)
		goto done;
	head_len = r;

	if (host_allowed(&c) < 0)
		goto done;
	if (dial(&c) < 0)
		goto done;

	/* What came after the head (a body, a ClientHello) stays in up. */
	up.off = head_len;
	up.len -= head_len;
	if (c.req.kind == LG_HTTP_CONNECT) {
		static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";

		if (send_all(c.cfd, ok, sizeof(ok) - 1) < 0)
			goto done;
		memmove(up.d, up.d + up.off, up.len);
		up.off = 0;
		relay(&c, &up, true, NULL);
	} else {
		size_t hl;
		cleanup_free char *head = lg_http_forward_head((const char *)up.d, &c.req, &hl);
		ssize_t k;

		lg_http_body_init(&body, &c.req);
		k = lg_http_body_feed(&body, up.d + up.off, up.len);
		if (k < 0) {
			deny(&c, "400 Bad Request", LG_EGRESS_FAILED,
			     "bad proxy request: malformed chunked request body");
			goto done;
		}
		/* The new head, then the part of the body already read. */
		if (hl + (size_t)k > up.cap) {
			up.cap = hl + k;
			up.d = xrealloc(up.d, up.cap);
		}
		memmove(up.d + hl, up.d + up.off, k);
		memcpy(up.d, head, hl);
		up.off = 0;
		up.len = hl + k;
		relay(&c, &up, false, &body);
	}

done:
	ev = (struct lg_egress_event){
	    .host = c.req.host[0] ? c.req.host : NULL,
	    .port = c.req.port,
	    .method = c.req.method[0] ? c.req.method : NULL,
	    .address = c.addr[0] ? c.addr : NULL,
	    .verdict = c.verdict,
	    .reason = c.has_reason ? c.reason : NULL,
	    .bytes_up = c.up,
	    .bytes_down = c.down,
	};
	if (eg->log != NULL)
		eg->log(eg->log_ctx, &ev);
	free(up.d);
	if (c.sfd >= 0)
		close(c.sfd);
	shutdown(client_fd, SHUT_WR);
	close(client_fd);
}
