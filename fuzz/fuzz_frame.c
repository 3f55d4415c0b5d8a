/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzzes the agent protocol's frame reader and TLV decoder, the first code
 * that touches bytes from a guest: any input must give frames or a clean
 * error, never a crash, an overread or unbounded memory.
 */
#include "proto/proto.h"

#include <stdlib.h>
#include <string.h>

static int on_frame(void *ctx, const struct lg_frame_hdr *h, const uint8_t *payload)
{
	struct lg_tlv_iter it;
	struct lg_tlv t;
	size_t *count = ctx;
	int r;

	(*count)++;
	if (h->type == LG_MSG_STDOUT || h->type == LG_MSG_STDERR || h->type == LG_MSG_STDIN)
		return 0;
	if (h->type == LG_MSG_STDIN_ACK) {
		/* A u32 of credit, read only when the length says it is there. */
		if (h->len == 4 && lg_get_le32(payload) == 0xdeadbeefu)
			(*count)++;
		return 0;
	}
	lg_tlv_iter_init(&it, payload, h->len);
	while ((r = lg_tlv_next(&it, &t)) == 1) {
		uint32_t u32;
		uint64_t u64;
		char *s = NULL;

		lg_tlv_u32(&t, &u32);
		lg_tlv_u64(&t, &u64);
		if (lg_tlv_strdup(&t, &s) == 0) {
			if (strlen(s) != t.len)
				abort();
			free(s);
		}
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct lg_reader r;
	size_t count = 0;
	size_t split = size > 0 ? data[0] % 7 + 1 : 1;

	/* Feed in uneven pieces: framing must not depend on read boundaries. */
	lg_reader_init(&r);
	for (size_t off = 0; off < size;) {
		size_t n = size - off < split ? size - off : split;
		if (lg_reader_feed(&r, data + off, n, on_frame, &count) < 0)
			break;
		if (r.cap > LG_FRAME_HDR_SIZE + LG_FRAME_MAX_PAYLOAD + 4096)
			abort();
		off += n;
	}
	lg_reader_free(&r);
	return 0;
}
