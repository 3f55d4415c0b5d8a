/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A tiny tar writer for the tests that feed archives to the extractor
 * (test-tar, test-rootfs): ustar headers with checksums, sizes in octal or
 * base-256, padding.  Test code only.
 */
#ifndef LG_TESTS_TARBUILD_H
#define LG_TESTS_TARBUILD_H

#include "common/util.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

struct tb {
	uint8_t *buf;
	size_t len, cap;
};

static inline void tb_raw(struct tb *t, const void *p, size_t n)
{
	if (t->len + n > t->cap) {
		t->cap = (t->len + n) * 2 + 4096;
		t->buf = xrealloc(t->buf, t->cap);
	}
	memcpy(t->buf + t->len, p, n);
	t->len += n;
}

static inline void tb_pad(struct tb *t)
{
	static const uint8_t zeros[512];
	tb_raw(t, zeros, (512 - t->len % 512) % 512);
}

static inline void tb_octal(uint8_t *f, size_t len, uint64_t v)
{
	char tmp[32];
	snprintf(tmp, sizeof(tmp), "%0*llo", (int)len - 1, (unsigned long long)v);
	memcpy(f, tmp, len - 1);
	f[len - 1] = '\0';
}

static inline void tb_set_checksum(uint8_t *h)
{
	unsigned sum = 0;

	memset(h + 148, ' ', 8);
	for (int i = 0; i < 512; i++)
		sum += h[i];
	snprintf((char *)h + 148, 8, "%06o", sum);
	h[155] = ' ';
}

/* A ustar header; size is written in base-256 when it does not fit octal. */
static inline void tb_header_ids(struct tb *t, const char *name, char type, unsigned mode,
				 uint64_t size, const char *link, unsigned uid, unsigned gid)
{
	uint8_t h[512] = {0};

	memcpy(h, name, strnlen(name, 100));
	tb_octal(h + 100, 8, mode);
	tb_octal(h + 108, 8, uid);
	tb_octal(h + 116, 8, gid);
	if (size < (1ull << 33)) {
		tb_octal(h + 124, 12, size);
	} else {
		h[124] = 0x80;
		for (int i = 0; i < 8; i++)
			h[135 - i] = (uint8_t)(size >> (8 * i));
	}
	tb_octal(h + 136, 12, 1234567890);
	h[156] = (uint8_t)type;
	if (link)
		memcpy(h + 157, link, strnlen(link, 100));
	memcpy(h + 257,
	       "ustar\0"
	       "00",
	       8);
	tb_set_checksum(h);
	tb_raw(t, h, 512);
}

#endif
