/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The control socket's request parser: one line of JSON from a local
 * client, turned into an operation.  Pure (no I/O, no broker), so it is
 * fuzzed on its own (fuzz/fuzz_control.c).
 */
#ifndef LG_APPROVAL_CONTROL_REQ_H
#define LG_APPROVAL_CONTROL_REQ_H

#include <stdbool.h>
#include <stddef.h>

enum control_op {
	CONTROL_LIST,
	CONTROL_SHOW,
	CONTROL_APPROVE,
	CONTROL_DENY,
};

/* The longest approval id accepted; real ids are 15 bytes ("ap-" + 12 hex). */
#define CONTROL_ID_MAX 64

struct control_req {
	enum control_op op;
	char *id;     /* show, approve, deny: a string of 1..CONTROL_ID_MAX bytes */
	char *reason; /* approve, deny: optional, valid UTF-8 without NUL */
};

/*
 * Parses one request line of len bytes (need not be NUL-terminated).
 * Returns 0 and fills *req (free with control_req_clear), or -1 with a
 * one-line reason in why.
 */
int control_req_parse(const char *line, size_t len, struct control_req *req, char *why,
		      size_t why_len);
void control_req_clear(struct control_req *req);

#endif
