/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzzes the egress proxy's parsers, which read bytes from the guest: the
 * proxy request head (and, when it parses, the head rebuilt for upstream
 * and the body framing of what follows), and the TLS ClientHello SNI.
 */
#include "net/egress.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct lg_http_req req;
	char name[256];
	int r;

	r = lg_http_parse_request((const char *)data, size, &req);
	if (r > 0) {
		struct lg_http_body body;
		size_t hl;
		char *head;

		if ((size_t)r != req.head_len || req.head_len > size ||
		    req.head_len > LG_HTTP_MAX_HEAD || req.host[0] == '\0')
			abort();
		if (req.kind == LG_HTTP_FORWARD) {
			head = lg_http_forward_head((const char *)data, &req, &hl);
			if (strlen(head) != hl)
				abort();
			/* What we send upstream must itself parse as one request line + headers. */
			if (memchr(head, '\0', hl) != NULL || hl < 4 ||
			    memcmp(head + hl - 4, "\r\n\r\n", 4) != 0)
				abort();
			free(head);
		}
		lg_http_body_init(&body, &req);
		if (lg_http_body_feed(&body, data + r, size - r) > (ssize_t)(size - r))
			abort();
	}
	r = lg_tls_sni(data, size, name, sizeof(name));
	if (r == 1 && (name[0] == '\0' || strlen(name) > 253))
		abort();
	return 0;
}
