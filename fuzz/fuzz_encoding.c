/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzzes base64 decoding (client input) and UTF-8 sanitizing (guest output). */
#include "common/encoding.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *dec = NULL;
	size_t dlen, slen;
	char *s, *enc;

	/* Whatever decodes re-encodes to a string that decodes the same. */
	if (lg_base64_decode((const char *)data, size, &dec, &dlen) == 0) {
		uint8_t *again = NULL;
		size_t alen;
		enc = lg_base64_encode(dec, dlen);
		if (lg_base64_decode(enc, strlen(enc), &again, &alen) != 0 || alen != dlen ||
		    memcmp(again, dec, dlen) != 0)
			abort();
		free(again);
		free(enc);
		free(dec);
	}
	/* Encoding then decoding is the identity. */
	enc = lg_base64_encode(data, size);
	if (lg_base64_decode(enc, strlen(enc), &dec, &dlen) != 0 || dlen != size ||
	    (size > 0 && memcmp(dec, data, size) != 0))
		abort();
	free(dec);
	free(enc);
	/* Sanitized text is valid UTF-8, and valid input comes back unchanged. */
	s = lg_utf8_sanitize(data, size, &slen);
	if (!lg_utf8_valid((const uint8_t *)s, slen))
		abort();
	if (lg_utf8_valid(data, size) && (slen != size || memcmp(s, data, size) != 0))
		abort();
	free(s);
	return 0;
}
