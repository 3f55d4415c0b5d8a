/* SPDX-License-Identifier: Apache-2.0 */
#include "common/sha256.h"

#include "common/err.h"
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

static const uint32_t k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static inline uint32_t ror(uint32_t x, unsigned n)
{
	return (x >> n) | (x << (32 - n));
}

static void compress(uint32_t h[8], const uint8_t block[64])
{
	uint32_t w[64];
	uint32_t a, b, c, d, e, f, g, hh;

	for (int i = 0; i < 16; i++)
		w[i] = (uint32_t)block[4 * i] << 24 | (uint32_t)block[4 * i + 1] << 16 |
		       (uint32_t)block[4 * i + 2] << 8 | (uint32_t)block[4 * i + 3];
	for (int i = 16; i < 64; i++) {
		uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
		uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
	for (int i = 0; i < 64; i++) {
		uint32_t s1 = ror(e, 6) ^ ror(e, 11) ^ ror(e, 25);
		uint32_t ch = (e & f) ^ (~e & g);
		uint32_t t1 = hh + s1 + ch + k[i] + w[i];
		uint32_t s0 = ror(a, 2) ^ ror(a, 13) ^ ror(a, 22);
		uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
		uint32_t t2 = s0 + maj;
		hh = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
	}
	h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
}

void lg_sha256_init(struct lg_sha256 *ctx)
{
	static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
				       0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
	memcpy(ctx->h, iv, sizeof(iv));
	ctx->total = 0;
	ctx->used = 0;
}

void lg_sha256_update(struct lg_sha256 *ctx, const void *data, size_t len)
{
	const uint8_t *p = data;

	ctx->total += len;
	if (ctx->used > 0) {
		size_t take = 64 - ctx->used < len ? 64 - ctx->used : len;
		memcpy(ctx->buf + ctx->used, p, take);
		ctx->used += take;
		p += take;
		len -= take;
		if (ctx->used < 64)
			return;
		compress(ctx->h, ctx->buf);
		ctx->used = 0;
	}
	for (; len >= 64; p += 64, len -= 64)
		compress(ctx->h, p);
	memcpy(ctx->buf, p, len);
	ctx->used = len;
}

void lg_sha256_final(struct lg_sha256 *ctx, uint8_t out[LG_SHA256_LEN])
{
	uint64_t bits = ctx->total * 8;

	ctx->buf[ctx->used++] = 0x80;
	if (ctx->used > 56) {
		memset(ctx->buf + ctx->used, 0, 64 - ctx->used);
		compress(ctx->h, ctx->buf);
		ctx->used = 0;
	}
	memset(ctx->buf + ctx->used, 0, 56 - ctx->used);
	for (int i = 0; i < 8; i++)
		ctx->buf[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
	compress(ctx->h, ctx->buf);
	for (int i = 0; i < 8; i++) {
		out[4 * i] = (uint8_t)(ctx->h[i] >> 24);
		out[4 * i + 1] = (uint8_t)(ctx->h[i] >> 16);
		out[4 * i + 2] = (uint8_t)(ctx->h[i] >> 8);
		out[4 * i + 3] = (uint8_t)ctx->h[i];
	}
	memset(ctx, 0, sizeof(*ctx));
}

void lg_sha256(const void *data, size_t len, uint8_t out[LG_SHA256_LEN])
{
	struct lg_sha256 ctx;

	lg_sha256_init(&ctx);
	lg_sha256_update(&ctx, data, len);
	lg_sha256_final(&ctx, out);
}

void lg_sha256_hex(const uint8_t digest[LG_SHA256_LEN], char hex[LG_SHA256_HEX_LEN + 1])
{
	static const char digits[] = "0123456789abcdef";

	for (int i = 0; i < LG_SHA256_LEN; i++) {
		hex[2 * i] = digits[digest[i] >> 4];
		hex[2 * i + 1] = digits[digest[i] & 0xf];
	}
	hex[LG_SHA256_HEX_LEN] = '\0';
}

void lg_sha256_hex_of(const void *data, size_t len, char hex[LG_SHA256_HEX_LEN + 1])
{
	uint8_t d[LG_SHA256_LEN];

	lg_sha256(data, len, d);
	lg_sha256_hex(d, hex);
}

int lg_sha256_fd(int fd, char hex_out[LG_SHA256_HEX_LEN + 1], uint64_t *size_out,
		 struct lg_err **err)
{
	cleanup_free uint8_t *buf = NULL;
	struct lg_sha256 ctx;
	uint8_t digest[LG_SHA256_LEN];
	const size_t bufsz = 1 << 16;

	buf = xmalloc(bufsz);
	lg_sha256_init(&ctx);
	for (;;) {
		ssize_t n = read(fd, buf, bufsz);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return lg_err_sys(err, "read");
		}
		if (n == 0)
			break;
		lg_sha256_update(&ctx, buf, (size_t)n);
	}
	if (size_out != NULL)
		*size_out = ctx.total;
	lg_sha256_final(&ctx, digest);
	lg_sha256_hex(digest, hex_out);
	return 0;
}

int lg_sha256_file(const char *path, char hex_out[LG_SHA256_HEX_LEN + 1], struct lg_err **err)
{
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return lg_err_sys(err, "open `%s`", path);
	if (lg_sha256_fd(fd, hex_out, NULL, err) < 0)
		return lg_err_wrap(err, "`%s`", path);
	return 0;
}
