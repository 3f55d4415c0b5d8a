/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The audit log: append-only JSON lines, one entry per event, each fsync'd
 * and hash-chained to the one before it, so that removing, reordering or
 * editing an entry is detectable by `luminaguard audit verify`.
 */
#ifndef LG_AUDIT_AUDIT_H
#define LG_AUDIT_AUDIT_H

#include "common/err.h"
#include "common/sha256.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct audit_log;

/*
 * Opens (creating with mode 0600) the log at path for appending.  The last
 * entry's hash and sequence number are read so the chain continues; a log
 * whose last line is not a valid entry is refused (run audit verify), and
 * so is one shorter than its seal (path.seal, see audit_append()).  A log
 * without a seal gets one for its current head.
 */
int audit_open(const char *path, struct audit_log **out, struct lg_err **err);

/*
 * Appends one entry.  `event` is a JSON object (borrowed) with at least
 * "type" (e.g. "request", "decision", "outcome"); the log adds "seq", "ts"
 * (RFC 3339 UTC with microseconds), "prev" (the previous entry's hash, 64
 * zeros for the first) and "hash" (SHA-256 over the canonical JSON of the
 * entry without "hash": keys sorted, compact).  Written with one write(2)
 * and fsync'd before it returns; then the seal, path.seal, is replaced
 * atomically with the new head ({"entries":N,"hash":H}), under the same
 * flock, so that cutting entries off the end is detectable.  Thread-safe.
 */
int audit_append(struct audit_log *a, const json_t *event, struct lg_err **err);

/* "sha256:" and 64 hex digits: how an entry names a side file. */
#define AUDIT_BLOB_REF_LEN (7 + LG_SHA256_HEX_LEN)

/*
 * Stores data (len bytes, borrowed) in a side file next to the log,
 * path.blobs/HEX, named by its SHA-256, written atomically and fsync'd
 * before it returns; ref gets "sha256:HEX".  For what is too big to sit in
 * an entry (an entry's top-level "sha256:HEX" string names the file, and
 * verify checks the file's hash).
 */
int audit_put_blob(struct audit_log *a, const void *data, size_t len,
		   char ref[AUDIT_BLOB_REF_LEN + 1], struct lg_err **err);
/* path.blobs. New string. */
char *audit_blob_dir(const char *path);

void audit_close(struct audit_log *a);

/*
 * Checks the whole chain of the log at path: every line parses, seq counts
 * up from 1, every prev is the hash before it, every hash is right.  On
 * success *entries is the number of entries.  On failure *err names the
 * first bad line and what is wrong with it.
 */
int audit_verify(const char *path, size_t *entries, struct lg_err **err);

/*
 * audit_verify() that also gives the last entry's hash (64 zeros for an
 * empty log) in last_hash, when non-NULL: recorded somewhere the log's
 * writer cannot reach, it lets a later verify detect a rewritten or
 * truncated log, which the chain alone cannot.
 */
int audit_verify_last(const char *path, size_t *entries, char last_hash[LG_SHA256_HEX_LEN + 1],
		      struct lg_err **err);

struct audit_verify_result {
	size_t entries;
	char last_hash[LG_SHA256_HEX_LEN + 1];
	bool sealed;	       /* a seal file was there and matched */
	uint64_t seal_entries; /* the entries it named (fewer than entries after a crash) */
};

/*
 * The full check: the chain as audit_verify(), every side file an entry
 * names, and the seal: the log must hold the entry the seal names (so a
 * log cut short, or emptied, fails).  A log without a seal passes with
 * res->sealed false (its end cannot be checked).
 */
int audit_verify_full(const char *path, struct audit_verify_result *res, struct lg_err **err);

#endif
