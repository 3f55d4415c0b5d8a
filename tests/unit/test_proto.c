/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of the agent protocol framing and TLV codec. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "proto/proto.h"
#include "common/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct collected {
	int n;
	struct lg_frame_hdr h[16];
	uint8_t payload[16][256];
};

static int collect_cb(void *ctx, const struct lg_frame_hdr *h, const uint8_t *payload)
{
	struct collected *c = ctx;
	if (c->n >= 16)
		return -1;
	c->h[c->n] = *h;
	memcpy(c->payload[c->n], payload, h->len < 256 ? h->len : 256);
	c->n++;
	return 0;
}

static void test_header_roundtrip(void **state)
{
	struct lg_frame_hdr h = {.len = 1234, .type = LG_MSG_EXEC, .flags = 0, .id = 0xdeadbeef};
	struct lg_frame_hdr d;
	uint8_t raw[LG_FRAME_HDR_SIZE];

	lg_frame_hdr_encode(raw, &h);
	/* little-endian on the wire, whatever the host */
	assert_int_equal(raw[0], 1234 & 0xff);
	assert_int_equal(raw[1], 1234 >> 8);
	assert_int_equal(raw[8], 0xef);
	assert_int_equal(lg_frame_hdr_decode(raw, &d), 0);
	assert_int_equal(d.len, 1234);
	assert_int_equal(d.type, LG_MSG_EXEC);
	assert_int_equal(d.id, 0xdeadbeef);
}

static void test_header_rejects(void **state)
{
	struct lg_frame_hdr h = {.len = LG_FRAME_MAX_PAYLOAD + 1, .type = LG_MSG_PING};
	struct lg_frame_hdr d;
	uint8_t raw[LG_FRAME_HDR_SIZE];

	lg_frame_hdr_encode(raw, &h);
	assert_int_equal(lg_frame_hdr_decode(raw, &d), -EMSGSIZE);
	h.len = LG_FRAME_MAX_PAYLOAD; /* the limit itself is fine */
	lg_frame_hdr_encode(raw, &h);
	assert_int_equal(lg_frame_hdr_decode(raw, &d), 0);
	h.len = 0;
	h.type = 0;
	lg_frame_hdr_encode(raw, &h);
	assert_int_equal(lg_frame_hdr_decode(raw, &d), -EPROTO);
	h.type = LG_MSG_MAX_ + 1;
	lg_frame_hdr_encode(raw, &h);
	assert_int_equal(lg_frame_hdr_decode(raw, &d), -EPROTO);
	h.type = LG_MSG_PING;
	h.flags = 1;
	lg_frame_hdr_encode(raw, &h);
	assert_int_equal(lg_frame_hdr_decode(raw, &d), -EPROTO);
}

static void test_tlv_roundtrip(void **state)
{
	struct lg_buf b = {0};
	size_t start = lg_frame_begin(&b, LG_MSG_EXEC, 7);
	struct lg_reader r;
	struct lg_frame_hdr h;
	const uint8_t *payload;
	struct lg_tlv_iter it;
	struct lg_tlv t;
	uint32_t u32;
	uint64_t u64;
	char *s;

	lg_tlv_put_str(&b, LG_TAG_ARGV, "echo");
	lg_tlv_put_str(&b, LG_TAG_ARGV, "");
	lg_tlv_put_u32(&b, LG_TAG_TIMEOUT_MS, 5000);
	lg_tlv_put_u64(&b, LG_TAG_OFFSET, 0x1122334455667788ull);
	assert_int_equal(lg_frame_end(&b, start), 0);

	lg_reader_init(&r);
	size_t room;
	uint8_t *dst = lg_reader_space(&r, &room);
	assert_true(room >= b.len);
	memcpy(dst, b.data, b.len);
	lg_reader_commit(&r, b.len);
	assert_int_equal(lg_reader_peek(&r, &h, &payload), 1);
	assert_int_equal(h.type, LG_MSG_EXEC);
	assert_int_equal(h.id, 7);

	lg_tlv_iter_init(&it, payload, h.len);
	assert_int_equal(lg_tlv_next(&it, &t), 1);
	assert_int_equal(t.tag, LG_TAG_ARGV);
	assert_int_equal(lg_tlv_strdup(&t, &s), 0);
	assert_string_equal(s, "echo");
	free(s);
	assert_int_equal(lg_tlv_next(&it, &t), 1);
	assert_int_equal(t.len, 0);
	assert_int_equal(lg_tlv_strdup(&t, &s), 0);
	assert_string_equal(s, "");
	free(s);
	assert_int_equal(lg_tlv_next(&it, &t), 1);
	assert_int_equal(lg_tlv_u32(&t, &u32), 0);
	assert_int_equal(u32, 5000);
	assert_int_equal(lg_tlv_u64(&t, &u64), -EPROTO); /* wrong width */
	assert_int_equal(lg_tlv_next(&it, &t), 1);
	assert_int_equal(lg_tlv_u64(&t, &u64), 0);
	assert_true(u64 == 0x1122334455667788ull);
	assert_int_equal(lg_tlv_next(&it, &t), 0);
	lg_reader_pop(&r);
	assert_int_equal(lg_reader_peek(&r, &h, &payload), 0);
	lg_reader_free(&r);
	lg_buf_free(&b);
}

static void test_tlv_malformed(void **state)
{
	/* length runs past the end */
	uint8_t bad1[] = {LG_TAG_PATH, 0, 10, 0, 0, 0, 'a', 'b'};
	/* header cut short */
	uint8_t bad2[] = {LG_TAG_PATH, 0, 1};
	/* tag 0; an unknown tag is not malformed (a newer peer's field) */
	uint8_t bad3[] = {0, 0, 0, 0, 0, 0};
	uint8_t unknown[] = {0xff, 0x7f, 1, 0, 0, 0, 'x', LG_TAG_PATH, 0, 0, 0, 0, 0};
	/* a huge length that would overflow a naive pointer check */
	uint8_t bad5[] = {LG_TAG_PATH, 0, 0xff, 0xff, 0xff, 0xff, 'x'};
	/* an embedded NUL in a string */
	uint8_t nul[] = {LG_TAG_PATH, 0, 3, 0, 0, 0, 'a', 0, 'b'};
	struct lg_tlv_iter it;
	struct lg_tlv t;
	char *s = NULL;

	lg_tlv_iter_init(&it, bad1, sizeof(bad1));
	assert_int_equal(lg_tlv_next(&it, &t), -EPROTO);
	lg_tlv_iter_init(&it, bad2, sizeof(bad2));
	assert_int_equal(lg_tlv_next(&it, &t), -EPROTO);
	lg_tlv_iter_init(&it, bad3, sizeof(bad3));
	assert_int_equal(lg_tlv_next(&it, &t), -EPROTO);
	lg_tlv_iter_init(&it, unknown, sizeof(unknown));
	assert_int_equal(lg_tlv_next(&it, &t), 1);
	assert_int_equal(t.tag, 0x7fff);
	assert_int_equal(t.len, 1);
	assert_int_equal(lg_tlv_next(&it, &t), 1);
	assert_int_equal(t.tag, LG_TAG_PATH);
	assert_int_equal(lg_tlv_next(&it, &t), 0);
	lg_tlv_iter_init(&it, bad5, sizeof(bad5));
	assert_int_equal(lg_tlv_next(&it, &t), -EPROTO);
	lg_tlv_iter_init(&it, nul, sizeof(nul));
	assert_int_equal(lg_tlv_next(&it, &t), 1);
	assert_int_equal(lg_tlv_strdup(&t, &s), -EPROTO);
	assert_null(s);
}

/* Frames split at every possible byte boundary come out whole and in order. */
static void test_reader_byte_by_byte(void **state)
{
	struct lg_buf b = {0};
	struct collected c = {0};
	struct lg_reader r;

	lg_frame_data(&b, LG_MSG_STDOUT, 1, "hello", 5);
	lg_frame_data(&b, LG_MSG_STDERR, 2, NULL, 0);
	size_t s = lg_frame_begin(&b, LG_MSG_RESULT, 3);
	lg_tlv_put_u32(&b, LG_TAG_ERRNO, 0);
	lg_frame_end(&b, s);

	lg_reader_init(&r);
	for (size_t i = 0; i < b.len; i++)
		assert_int_equal(lg_reader_feed(&r, b.data + i, 1, collect_cb, &c), 0);
	assert_int_equal(c.n, 3);
	assert_int_equal(c.h[0].type, LG_MSG_STDOUT);
	assert_int_equal(c.h[0].len, 5);
	assert_memory_equal(c.payload[0], "hello", 5);
	assert_int_equal(c.h[1].type, LG_MSG_STDERR);
	assert_int_equal(c.h[1].len, 0);
	assert_int_equal(c.h[2].id, 3);
	lg_reader_free(&r);

	/* and all at once */
	memset(&c, 0, sizeof(c));
	lg_reader_init(&r);
	assert_int_equal(lg_reader_feed(&r, b.data, b.len, collect_cb, &c), 0);
	assert_int_equal(c.n, 3);
	lg_reader_free(&r);
	lg_buf_free(&b);
}

static void test_reader_rejects_garbage(void **state)
{
	struct collected c = {0};
	struct lg_reader r;
	uint8_t junk[64];

	memset(junk, 0xAB, sizeof(junk));
	lg_reader_init(&r);
	assert_true(lg_reader_feed(&r, junk, sizeof(junk), collect_cb, &c) < 0);
	assert_int_equal(c.n, 0);
	lg_reader_free(&r);
}

/* A maximum-size frame fits; the reader's buffer never grows past one frame. */
static void test_reader_max_frame(void **state)
{
	struct lg_buf b = {0};
	struct lg_reader r;
	uint8_t *big = xzalloc(LG_FRAME_MAX_PAYLOAD);
	int frames = 0;

	big[LG_FRAME_MAX_PAYLOAD - 1] = 0x5a;
	lg_frame_data(&b, LG_MSG_STDOUT, 9, big, LG_FRAME_MAX_PAYLOAD);
	lg_frame_data(&b, LG_MSG_STDOUT, 9, big, LG_FRAME_MAX_PAYLOAD);
	lg_reader_init(&r);
	size_t off = 0;
	while (off < b.len) {
		struct lg_frame_hdr h;
		const uint8_t *p;
		size_t room;
		uint8_t *dst = lg_reader_space(&r, &room);
		size_t n = b.len - off < room ? b.len - off : room;
		memcpy(dst, b.data + off, n);
		lg_reader_commit(&r, n);
		off += n;
		assert_true(r.cap <= LG_FRAME_HDR_SIZE + LG_FRAME_MAX_PAYLOAD + 4096);
		while (lg_reader_peek(&r, &h, &p) == 1) {
			assert_int_equal(h.len, LG_FRAME_MAX_PAYLOAD);
			assert_int_equal(p[LG_FRAME_MAX_PAYLOAD - 1], 0x5a);
			lg_reader_pop(&r);
			frames++;
		}
	}
	assert_int_equal(frames, 2);
	lg_reader_free(&r);
	lg_buf_free(&b);
	free(big);
}

static void test_frame_end_oversize(void **state)
{
	struct lg_buf b = {0};
	uint8_t *big = xzalloc(LG_FRAME_MAX_PAYLOAD);
	size_t s;

	lg_frame_data(&b, LG_MSG_PING, 1, NULL, 0);
	size_t before = b.len;
	s = lg_frame_begin(&b, LG_MSG_FILE_WRITE, 2);
	lg_tlv_put(&b, LG_TAG_DATA, big, LG_FRAME_MAX_PAYLOAD);
	assert_int_equal(lg_frame_end(&b, s), -EMSGSIZE);
	/* the oversized frame is dropped whole; what came before stays */
	assert_int_equal(b.len, before);
	lg_buf_free(&b);
	free(big);
}

static void test_msg_names(void **state)
{
	assert_string_equal(lg_msg_name(LG_MSG_EXEC), "EXEC");
	assert_string_equal(lg_msg_name(LG_MSG_RESULT), "RESULT");
	assert_string_equal(lg_msg_name(LG_MSG_STDIN_ACK), "STDIN_ACK");
	assert_string_equal(lg_msg_name(LG_MSG_MAX_ + 1), "UNKNOWN");
	assert_string_equal(lg_msg_name(0), "UNKNOWN");
	assert_string_equal(lg_msg_name(999), "UNKNOWN");
}

/* ADOPT's hostname and machine-id rules, shared by the host and the guest. */
static void test_adopt_validators(void **state)
{
	const char *good_hosts[] = {
	    "a", "lg-0123abcd", "A1-b2",
	    "x23456789012345678901234567890123456789012345678901234567890123"};
	const char *bad_hosts[] = {
	    "",		"-a",
	    "a-",	"a_b",
	    "a.b",	"a b",
	    "\xc3\xa9", "x234567890123456789012345678901234567890123456789012345678901234"};

	for (size_t i = 0; i < ARRAY_SIZE(good_hosts); i++)
		assert_true(lg_hostname_valid(good_hosts[i], strlen(good_hosts[i])));
	for (size_t i = 0; i < ARRAY_SIZE(bad_hosts); i++)
		assert_false(lg_hostname_valid(bad_hosts[i], strlen(bad_hosts[i])));
	/* The length is the field's: an embedded NUL is not a shorter name. */
	assert_false(lg_hostname_valid("ab\0c", 4));
	assert_false(lg_hostname_valid(NULL, 0));
	assert_true(lg_machine_id_valid("0123456789abcdef0123456789abcdef", 32));
	assert_false(lg_machine_id_valid("0123456789ABCDEF0123456789abcdef", 32));
	assert_false(lg_machine_id_valid("00000000000000000000000000000000", 32));
	assert_false(lg_machine_id_valid("0123456789abcdef0123456789abcde", 31));
	assert_false(lg_machine_id_valid("0123456789abcdef0123456789abcdef0", 33));
	assert_false(lg_machine_id_valid("0123456789abcdef0123456789abcdez", 32));
	assert_string_equal(lg_msg_name(LG_MSG_ADOPT), "ADOPT");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_header_roundtrip),
	    cmocka_unit_test(test_header_rejects),
	    cmocka_unit_test(test_tlv_roundtrip),
	    cmocka_unit_test(test_tlv_malformed),
	    cmocka_unit_test(test_reader_byte_by_byte),
	    cmocka_unit_test(test_reader_rejects_garbage),
	    cmocka_unit_test(test_reader_max_frame),
	    cmocka_unit_test(test_frame_end_oversize),
	    cmocka_unit_test(test_msg_names),
	    cmocka_unit_test(test_adopt_validators),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
