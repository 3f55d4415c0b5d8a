/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Parsing a request from the host into its fields: the agent's only parser
 * of bytes from outside the guest, kept apart so it can be fuzzed alone
 * (fuzz/fuzz_agent_request.c).
 */
#ifndef LG_GUEST_REQUEST_H
#define LG_GUEST_REQUEST_H

#include "common/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MAX_ARGS 4096
#define MAX_ENVS 4096

/* Every field a request may carry; each op uses the ones it needs. */
struct req {
	char *path;
	char *cwd;
	char *user;  /* EXEC's USER: a name or a decimal uid; NULL: the agent's own (root) */
	char **argv; /* NULL-terminated when argc > 0 */
	size_t argc;
	char **env;
	size_t envc;
	uint32_t mode;
	bool has_mode;
	uint64_t offset;
	uint32_t length;
	bool has_length;
	uint32_t flags;
	uint32_t timeout_ms;
	uint32_t signal;
	bool has_signal;
	const uint8_t *data; /* points into the reader: valid during the op */
	size_t data_len;
	/* ADOPT (protocol 4); req_parse checks each one's form. */
	const uint8_t *seed; /* points into the reader, like data */
	size_t seed_len;
	uint64_t realtime_ns;
	bool has_realtime;
	char *hostname;
	char *machine_id;
};

/*
 * Fills rq from a request payload.  On error *err says which field was
 * wrong; rq may be partly filled and must still be freed with req_free().
 * Fields that repeat where they should not: the last one wins.  Unknown
 * tags (a newer host's fields) are skipped.
 */
int req_parse(struct req *rq, const uint8_t *p, size_t n, struct lg_err **err);
void req_free(struct req *rq);

#endif
