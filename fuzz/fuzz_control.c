/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzzes the control socket's request parser (approval/control_req.c):
 * every process of the server's uid can send it a line, and a bad one must
 * be a one-line error, never a crash, a leak or an op with a bad field.
 */
#include "approval/control_req.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct control_req req;
	char why[160];

	if (control_req_parse((const char *)data, size, &req, why, sizeof(why)) == 0) {
		/* What the server relies on: an id where one is needed, bounded, no NUL inside. */
		if (req.op != CONTROL_LIST &&
		    (req.id == NULL || strlen(req.id) == 0 || strlen(req.id) > CONTROL_ID_MAX))
			abort();
		if ((req.op == CONTROL_LIST || req.op == CONTROL_SHOW) && req.reason != NULL)
			abort();
		control_req_clear(&req);
	} else {
		/* The reason is one printable line (it goes back to a person). */
		if (memchr(why, '\0', sizeof(why)) == NULL || strchr(why, '\n') != NULL)
			abort();
	}
	return 0;
}
