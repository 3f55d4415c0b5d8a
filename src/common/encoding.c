/* SPDX-License-Identifier: Apache-2.0 */
#include "common/encoding.h"

#include "common/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Length of the well-formed UTF-8 sequence at p (RFC 3629), or 0. */
static size_t utf8_seq(const uint8_t *p, size_t n)
{
	uint8_t c = p[0];

	if (c >= 0x01 && c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		return n >= 2 && (p[1] & 0xc0) == 0x80 ? 2 : 0;
	if (c >= 0xe0 && c <= 0xef) {
		if (n < 3 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80)
			return 0;
		if (c == 0xe0 && p[1] < 0xa0)
			return 0; /* overlong */
		if (c == 0xed && p[1] >= 0xa0)
			return 0; /* UTF-16 surrogate */
		return 3;
	}
	if (c >= 0xf0 && c <= 0xf4) {
		if (n < 4 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 ||
		    (p[3] & 0xc0) != 0x80)
			return 0;
		if (c == 0xf0 && p[1] < 0x90)
			return 0; /* overlong */
		if (c == 0xf4 && p[1] >= 0x90)
			return 0; /* above U+10FFFF */
		return 4;
	}
	return 0;
}

bool lg_utf8_valid(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n;) {
		size_t k = utf8_seq(p + i, n - i);
		if (k == 0)
			return false;
		i += k;
	}
	return true;
}

char *lg_utf8_sanitize(const uint8_t *p, size_t n, size_t *out_len)
{
	/* Worst case every byte becomes the 3-byte replacement character. */
	char *out = xmalloc(3 * n + 1);
	size_t j = 0;

	for (size_t i = 0; i < n;) {
		size_t k = utf8_seq(p + i, n - i);
		if (k == 0) {
			memcpy(out + j, "\xef\xbf\xbd", 3);
			j += 3;
			i++;
			continue;
		}
		memcpy(out + j, p + i, k);
		j += k;
		i += k;
	}
	out[j] = '\0';
	if (out_len != NULL)
		*out_len = j;
	return out;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *lg_base64_encode(const uint8_t *p, size_t n)
{
	char *out = xmalloc((n + 2) / 3 * 4 + 1);
	size_t j = 0;

	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < n)
			v |= p[i + 2];
		out[j++] = b64[(v >> 18) & 63];
		out[j++] = b64[(v >> 12) & 63];
		out[j++] = i + 1 < n ? b64[(v >> 6) & 63] : '=';
		out[j++] = i + 2 < n ? b64[v & 63] : '=';
	}
	out[j] = '\0';
	return out;
}

static int b64_value(char c)
{
	const char *q = c != '\0' ? strchr(b64, c) : NULL;
	return q != NULL ? (int)(q - b64) : -1;
}

int lg_base64_decode(const char *s, size_t len, uint8_t **out, size_t *out_len)
{
	uint8_t *buf;
	size_t j = 0;

	if (len % 4 != 0)
		return -EINVAL;
	buf = xmalloc(len / 4 * 3 + 1);
	for (size_t i = 0; i < len; i += 4) {
		bool last = i + 4 == len;
		int a = b64_value(s[i]), b = b64_value(s[i + 1]);
		int c = s[i + 2] == '=' && last ? -2 : b64_value(s[i + 2]);
		int d = s[i + 3] == '=' && last ? -2 : b64_value(s[i + 3]);

		/* '=' only at the very end, and "x=y" (padding then data) is not base64. */
		if (a < 0 || b < 0 || c == -1 || d == -1 || (c == -2 && d != -2)) {
			free(buf);
			return -EINVAL;
		}
		uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12;
		buf[j++] = (uint8_t)(v >> 16);
		if (c >= 0) {
			v |= (uint32_t)c << 6;
			buf[j++] = (uint8_t)(v >> 8);
		}
		if (d >= 0) {
			v |= (uint32_t)d;
			buf[j++] = (uint8_t)v;
		}
	}
	*out = buf;
	*out_len = j;
	return 0;
}

int lg_hex_digit(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}
