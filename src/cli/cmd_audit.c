/* SPDX-License-Identifier: Apache-2.0 */
/* `luminaguard audit`: check the audit log's hash chain. */
#include "cli/commands.h"
#include "cli/commands_approval.h"

#include "audit/audit.h"
#include "common/err.h"
#include "common/paths.h"
#include "common/util.h"

#include <stdio.h>
#include <string.h>

static const char audit_usage[] =
    "Usage: luminaguard audit verify [FILE]\n"
    "\n"
    "Checks the audit log's hash chain: every line is a well-formed entry,\n"
    "sequence numbers count up from 1, every entry names the hash of the one\n"
    "before it, and every hash is right; every side file an entry names\n"
    "(FILE.blobs/) matches its hash; and the log still holds the entry its seal\n"
    "(FILE.seal) names, so entries cut off the end are found.  FILE defaults\n"
    "to the data directory's audit.jsonl.  Prints the number of entries and the\n"
    "last hash (keep it elsewhere to detect a log rewritten together with its\n"
    "seal), or the first problem, with exit status 1.\n";

int cmd_audit(int argc, char **argv)
{
	struct lg_err *err = NULL;
	cleanup_free char *def = NULL;
	struct audit_verify_result res;
	const char *path;

	if (argc < 2) {
		fputs(audit_usage, stderr);
		return 2;
	}
	if (cli_is_help(argv[1]) || (argc > 2 && cli_is_help(argv[2]))) {
		fputs(audit_usage, stdout);
		return 0;
	}
	if (strcmp(argv[1], "verify") != 0) {
		fprintf(stderr,
			"luminaguard: audit: unknown command '%s' (see luminaguard audit "
			"--help)\n",
			argv[1]);
		return 2;
	}
	if (argc > 3) {
		fprintf(stderr, "luminaguard: audit verify: unexpected argument '%s'\n", argv[3]);
		return 2;
	}
	if (argc == 3) {
		path = argv[2];
	} else {
		cleanup_free char *home = lg_home_dir();
		def = xasprintf("%s/audit.jsonl", home);
		path = def;
	}
	if (audit_verify_full(path, &res, &err) < 0) {
		lg_err_report("luminaguard", &err);
		return 1;
	}
	printf("ok: %zu entries, chain intact\n", res.entries);
	if (!res.sealed)
		printf("warning: no seal file (%s.seal): entries cut off the end would not be "
		       "noticed\n",
		       path);
	else if (res.seal_entries < res.entries)
		printf("sealed at %llu entries (the last write ended before its seal was "
		       "updated)\n",
		       (unsigned long long)res.seal_entries);
	else
		printf("seal matches\n");
	printf("last hash: %s\n", res.last_hash);
	return 0;
}
