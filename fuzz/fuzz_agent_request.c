/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzzes lg-agent's request parser: the guest side treats the host's bytes
 * with the same care the host gives the guest's.
 */
#include "guest/request.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct req rq = {0};
	struct lg_err *err = NULL;

	if (req_parse(&rq, data, size, &err) == 0) {
		/* argv and env are NULL-terminated arrays of the right length */
		if (rq.argc > 0 && rq.argv[rq.argc] != NULL)
			abort();
		if (rq.envc > 0 && rq.env[rq.envc] != NULL)
			abort();
		if (rq.data != NULL && (rq.data < data || rq.data + rq.data_len > data + size))
			abort();
	}
	req_free(&rq);
	lg_err_free(&err);
	return 0;
}
