/* SPDX-License-Identifier: Apache-2.0 */
#include "proto/proto.h"

#include "common/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char *const msg_names[] = {
    [LG_MSG_HELLO] = "HELLO",
    [LG_MSG_PING] = "PING",
    [LG_MSG_EXEC] = "EXEC",
    [LG_MSG_STDIN] = "STDIN",
    [LG_MSG_STDOUT] = "STDOUT",
    [LG_MSG_STDERR] = "STDERR",
    [LG_MSG_EXIT] = "EXIT",
    [LG_MSG_KILL] = "KILL",
    [LG_MSG_FILE_WRITE] = "FILE_WRITE",
    [LG_MSG_FILE_READ] = "FILE_READ",
    [LG_MSG_LIST_DIR] = "LIST_DIR",
    [LG_MSG_STAT] = "STAT",
    [LG_MSG_MKDIR] = "MKDIR",
    [LG_MSG_REMOVE] = "REMOVE",
    [LG_MSG_SHUTDOWN] = "SHUTDOWN",
    [LG_MSG_RESULT] = "RESULT",
    [LG_MSG_NET_OPEN] = "NET_OPEN",
    [LG_MSG_NET_DATA] = "NET_DATA",
    [LG_MSG_NET_EOF] = "NET_EOF",
    [LG_MSG_NET_CLOSE] = "NET_CLOSE",
    [LG_MSG_NET_ACK] = "NET_ACK",
    [LG_MSG_STDIN_ACK] = "STDIN_ACK",
    [LG_MSG_ADOPT] = "ADOPT",
};

const char *lg_msg_name(uint16_t type)
{
	if (type == 0 || type > LG_MSG_MAX_)
		return "UNKNOWN";
	return msg_names[type];
}

bool lg_hostname_valid(const char *s, size_t len)
{
	if (s == NULL || len == 0 || len > LG_HOSTNAME_MAX || s[0] == '-' || s[len - 1] == '-')
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-'))
			return false;
	}
	return true;
}

bool lg_machine_id_valid(const char *s, size_t len)
{
	bool nonzero = false;

	if (s == NULL || len != LG_MACHINE_ID_LEN)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
		nonzero |= s[i] != '0';
	}
	return nonzero;
}

void lg_put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

void lg_put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

void lg_put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

uint16_t lg_get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

uint32_t lg_get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}

uint64_t lg_get_le64(const uint8_t *p)
{
	return (uint64_t)lg_get_le32(p) | ((uint64_t)lg_get_le32(p + 4) << 32);
}

void lg_frame_hdr_encode(uint8_t out[LG_FRAME_HDR_SIZE], const struct lg_frame_hdr *h)
{
	lg_put_le32(out, h->len);
	lg_put_le16(out + 4, h->type);
	lg_put_le16(out + 6, h->flags);
	lg_put_le32(out + 8, h->id);
}

int lg_frame_hdr_decode(const uint8_t in[LG_FRAME_HDR_SIZE], struct lg_frame_hdr *h)
{
	h->len = lg_get_le32(in);
	h->type = lg_get_le16(in + 4);
	h->flags = lg_get_le16(in + 6);
	h->id = lg_get_le32(in + 8);
	if (h->len > LG_FRAME_MAX_PAYLOAD)
		return -EMSGSIZE;
	if (h->type == 0 || h->type > LG_MSG_MAX_ || h->flags != 0)
		return -EPROTO;
	return 0;
}

/* ---- lg_buf ---- */

void lg_buf_free(struct lg_buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

void lg_buf_reserve(struct lg_buf *b, size_t extra)
{
	size_t need = b->len + extra;
	size_t cap;

	if (need <= b->cap)
		return;
	/* Reclaim the consumed prefix before growing. */
	if (b->off > 0) {
		memmove(b->data, b->data + b->off, b->len - b->off);
		b->len -= b->off;
		b->off = 0;
		need = b->len + extra;
		if (need <= b->cap)
			return;
	}
	cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap *= 2;
	b->data = xrealloc(b->data, cap);
	b->cap = cap;
}

void lg_buf_append(struct lg_buf *b, const void *p, size_t n)
{
	if (n == 0)
		return;
	lg_buf_reserve(b, n);
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

void lg_buf_consume(struct lg_buf *b, size_t n)
{
	b->off += n;
	if (b->off >= b->len) {
		b->off = 0;
		b->len = 0;
	}
}

size_t lg_frame_begin(struct lg_buf *b, uint16_t type, uint32_t id)
{
	struct lg_frame_hdr h = {.len = 0, .type = type, .flags = 0, .id = id};
	uint8_t raw[LG_FRAME_HDR_SIZE];
	size_t start;

	lg_frame_hdr_encode(raw, &h);
	/*
	 * The offset is relative to the unconsumed head, not to b->data: when
	 * b is a partly flushed queue, a later append may compact it (memmove
	 * the head to the front), and an absolute offset would then point at
	 * the wrong bytes.  Nothing may consume from b between begin and end.
	 */
	start = lg_buf_pending(b);
	lg_buf_append(b, raw, sizeof(raw));
	return start;
}

int lg_frame_end(struct lg_buf *b, size_t start)
{
	size_t len = lg_buf_pending(b) - start - LG_FRAME_HDR_SIZE;

	if (len > LG_FRAME_MAX_PAYLOAD) {
		b->len = b->off + start; /* drop the oversized frame whole, never send half */
		return -EMSGSIZE;
	}
	lg_put_le32(b->data + b->off + start, (uint32_t)len);
	return 0;
}

void lg_frame_data(struct lg_buf *b, uint16_t type, uint32_t id, const void *p, size_t n)
{
	size_t start = lg_frame_begin(b, type, id);
	lg_buf_append(b, p, n);
	lg_frame_end(b, start);
}

void lg_tlv_put(struct lg_buf *b, uint16_t tag, const void *p, size_t n)
{
	uint8_t hdr[LG_TLV_HDR_SIZE];

	lg_put_le16(hdr, tag);
	lg_put_le32(hdr + 2, (uint32_t)n);
	lg_buf_append(b, hdr, sizeof(hdr));
	lg_buf_append(b, p, n);
}

void lg_tlv_put_u32(struct lg_buf *b, uint16_t tag, uint32_t v)
{
	uint8_t raw[4];
	lg_put_le32(raw, v);
	lg_tlv_put(b, tag, raw, sizeof(raw));
}

void lg_tlv_put_u64(struct lg_buf *b, uint16_t tag, uint64_t v)
{
	uint8_t raw[8];
	lg_put_le64(raw, v);
	lg_tlv_put(b, tag, raw, sizeof(raw));
}

void lg_tlv_put_str(struct lg_buf *b, uint16_t tag, const char *s)
{
	lg_tlv_put(b, tag, s, strlen(s));
}

/* ---- TLV reading ---- */

void lg_tlv_iter_init(struct lg_tlv_iter *it, const uint8_t *payload, size_t len)
{
	it->p = payload;
	it->end = payload + len;
}

int lg_tlv_next(struct lg_tlv_iter *it, struct lg_tlv *out)
{
	size_t left = (size_t)(it->end - it->p);
	uint32_t len;

	if (left == 0)
		return 0;
	if (left < LG_TLV_HDR_SIZE)
		return -EPROTO;
	out->tag = lg_get_le16(it->p);
	len = lg_get_le32(it->p + 2);
	/* Compare against what is left, never compute p + len first: no overflow. */
	if (len > left - LG_TLV_HDR_SIZE)
		return -EPROTO;
	/*
	 * Tag 0 is never valid.  Tags above LG_TAG_MAX_ come from a newer peer
	 * of the same protocol version; readers skip what they do not know.
	 */
	if (out->tag == 0)
		return -EPROTO;
	out->len = len;
	out->val = it->p + LG_TLV_HDR_SIZE;
	it->p += LG_TLV_HDR_SIZE + len;
	return 1;
}

int lg_tlv_u32(const struct lg_tlv *t, uint32_t *out)
{
	if (t->len != 4)
		return -EPROTO;
	*out = lg_get_le32(t->val);
	return 0;
}

int lg_tlv_u64(const struct lg_tlv *t, uint64_t *out)
{
	if (t->len != 8)
		return -EPROTO;
	*out = lg_get_le64(t->val);
	return 0;
}

int lg_tlv_strdup(const struct lg_tlv *t, char **out)
{
	char *s;

	if (memchr(t->val, '\0', t->len) != NULL)
		return -EPROTO;
	s = xmalloc(t->len + 1);
	memcpy(s, t->val, t->len);
	s[t->len] = '\0';
	*out = s;
	return 0;
}

/* ---- lg_reader ---- */

void lg_reader_init(struct lg_reader *r)
{
	memset(r, 0, sizeof(*r));
}

void lg_reader_free(struct lg_reader *r)
{
	free(r->buf);
	memset(r, 0, sizeof(*r));
}

/* Bytes the current frame needs in total, or 0 if the header is not complete/valid. */
static size_t frame_need(const struct lg_reader *r)
{
	struct lg_frame_hdr h;

	if (r->len < LG_FRAME_HDR_SIZE)
		return LG_FRAME_HDR_SIZE;
	if (lg_frame_hdr_decode(r->buf, &h) < 0)
		return LG_FRAME_HDR_SIZE; /* peek reports the error */
	return LG_FRAME_HDR_SIZE + h.len;
}

uint8_t *lg_reader_space(struct lg_reader *r, size_t *room)
{
	size_t need = frame_need(r);

	/*
	 * Read in largish pieces while waiting for a header, so one read()
	 * usually brings several small frames; never beyond one frame's worth
	 * of bytes past what the current frame needs.
	 */
	if (need < LG_FRAME_HDR_SIZE + 4096)
		need = LG_FRAME_HDR_SIZE + 4096;
	if (need <= r->len)
		need = r->len + 4096;
	if (need > LG_FRAME_HDR_SIZE + LG_FRAME_MAX_PAYLOAD + 4096)
		need = LG_FRAME_HDR_SIZE + LG_FRAME_MAX_PAYLOAD + 4096;
	if (r->cap < need) {
		r->buf = xrealloc(r->buf, need);
		r->cap = need;
	}
	*room = r->cap - r->len;
	return r->buf + r->len;
}

void lg_reader_commit(struct lg_reader *r, size_t n)
{
	r->len += n;
}

int lg_reader_peek(struct lg_reader *r, struct lg_frame_hdr *h, const uint8_t **payload)
{
	int ret;

	if (r->len < LG_FRAME_HDR_SIZE)
		return 0;
	ret = lg_frame_hdr_decode(r->buf, h);
	if (ret < 0)
		return ret;
	if (r->len - LG_FRAME_HDR_SIZE < h->len)
		return 0;
	*payload = r->buf + LG_FRAME_HDR_SIZE;
	return 1;
}

void lg_reader_pop(struct lg_reader *r)
{
	struct lg_frame_hdr h;
	size_t total;

	if (r->len < LG_FRAME_HDR_SIZE || lg_frame_hdr_decode(r->buf, &h) < 0)
		return;
	total = LG_FRAME_HDR_SIZE + h.len;
	if (total > r->len)
		return;
	memmove(r->buf, r->buf + total, r->len - total);
	r->len -= total;
}

int lg_reader_feed(struct lg_reader *r, const uint8_t *p, size_t n,
		   int (*fn)(void *ctx, const struct lg_frame_hdr *h, const uint8_t *payload),
		   void *ctx)
{
	while (n > 0 || r->len >= LG_FRAME_HDR_SIZE) {
		struct lg_frame_hdr h;
		const uint8_t *payload;
		int ret = lg_reader_peek(r, &h, &payload);

		if (ret < 0)
			return ret;
		if (ret == 1) {
			ret = fn(ctx, &h, payload);
			lg_reader_pop(r);
			if (ret != 0)
				return ret;
			continue;
		}
		if (n == 0)
			break;
		size_t room;
		uint8_t *dst = lg_reader_space(r, &room);
		size_t take = n < room ? n : room;
		memcpy(dst, p, take);
		lg_reader_commit(r, take);
		p += take;
		n -= take;
	}
	return 0;
}
