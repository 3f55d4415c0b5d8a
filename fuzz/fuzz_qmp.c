/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzzes the QMP line parser: QEMU's replies are untrusted once a guest runs. */
#include "hv/qmp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct qmp_msg m;
	struct lg_err *err = NULL;

	if (qmp_parse_line((const char *)data, size, &m, &err) == 0)
		qmp_msg_clear(&m);
	lg_err_free(&err);
	return 0;
}
