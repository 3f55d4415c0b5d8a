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
    "before it, and every hash is right.  FILE defaults to the data\n"
    "directory's audit.jsonl.  Prints the number of entries and the last hash\n"
    "(keep it elsewhere to detect a log that was cut short or rewritten), or\n"
    "the first bad line, with exit status 1.\n";

int cmd_audit(int argc, char **argv)
{
	struct lg_err *err = NULL;
	cleanup_free char *def = NULL;
	char last[LG_SHA256_HEX_LEN + 1];
	const char *path;
	size_t n = 0;

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
	if (audit_verify_last(path, &n, last, &err) < 0) {
		lg_err_report("luminaguard", &err);
		return 1;
	}
	printf("ok: %zu entries, chain intact\n", n);
	printf("last hash: %s\n", last);
	return 0;
}
