/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzzes the CLI's parsers of what the service answers (src/cli/client.c):
 * the response head, the body framing (Content-Length, chunked, to EOF)
 * fed in pieces whose sizes come from the input, the NDJSON line splitter
 * behind it, and the text made printable for a terminal.
 */
#include "cli/client.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct count {
	size_t bytes;
	int lines;
};

static int count_line(void *ctx, json_t *obj, struct lg_err **err)
{
	struct count *c = ctx;
	json_t *e = json_object_get(obj, "error");

	if (!json_is_object(obj))
		abort();
	if (json_is_string(e)) {
		char *t = lg_client_printable(json_string_value(e), 512);

		for (const char *p = t; *p != '\0'; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				abort();
		if (strlen(t) > 512)
			abort();
		free(t);
	}
	c->lines++;
	return 0;
}

static int count_sink(void *ctx, const uint8_t *p, size_t n, struct lg_err **err)
{
	struct lg_client_lines *l = ctx;
	struct count *c = l->ctx;

	c->bytes += n;
	return lg_client_lines_feed(l, p, n, err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct lg_client_head h;
	struct lg_client_body b;
	struct lg_err *err = NULL;
	struct count c = {0};
	struct lg_client_lines lines = {.on_line = count_line, .ctx = &c};
	size_t step, used;
	ssize_t hl;

	if (size < 1)
		return 0;
	/* The first byte picks the piece size the body arrives in. */
	step = (size_t)data[0] % 17 + 1;
	data++;
	size--;

	hl = lg_client_parse_head((const char *)data, size, &h, &err);
	if (hl < 0) {
		if (err == NULL || strchr(err->msg, '\n') != NULL)
			abort();
		lg_err_free(&err);
		return 0;
	}
	if (hl == 0)
		return 0;
	if ((size_t)hl > size || (size_t)hl > LG_CLIENT_MAX_HEAD || h.status < 200 ||
	    h.status > 599 || (h.chunked && h.has_length) || strlen(h.request_id) > 64)
		abort();

	lg_client_body_init(&b, &h);
	used = (size_t)hl;
	while (used < size && !b.done) {
		size_t n = size - used < step ? size - used : step;
		ssize_t r = lg_client_body_feed(&b, data + used, n, count_sink, &lines, &err);

		if (r < 0)
			break;
		if ((size_t)r > n || ((size_t)r < n && !b.done))
			abort();
		used += (size_t)r;
	}
	if (err == NULL && lg_client_body_eof(&b, &err) == 0)
		lg_client_lines_end(&lines, &err);
	if (c.bytes > size)
		abort();
	lg_err_free(&err);
	lg_client_lines_clear(&lines);
	return 0;
}
