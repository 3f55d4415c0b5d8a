/* SPDX-License-Identifier: Apache-2.0 */
/* `luminaguard policy`: check a policy file, show the default, try an action. */
#include "cli/commands.h"
#include "cli/commands_approval.h"

#include "common/err.h"
#include "policy/policy.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static const char policy_usage[] =
    "Usage: luminaguard policy COMMAND\n"
    "\n"
    "The approval cliff's policy (docs/policy.md describes the format).\n"
    "\n"
    "Commands:\n"
    "  check FILE                    parse FILE strictly; print the first error\n"
    "  show                          print the built-in default policy\n"
    "  classify [--policy FILE] TOOL [ARGS [CONTEXT]]\n"
    "                                classify one action (ARGS and CONTEXT are\n"
    "                                JSON objects) and print verdict, risk, rule\n"
    "                                and reason\n";

static int policy_check(int argc, char **argv)
{
	struct lg_err *err = NULL;
	struct policy *p = NULL;

	if (argc != 3) {
		fprintf(stderr, "luminaguard: policy check: expected one FILE\n");
		return 2;
	}
	if (policy_load_file(argv[2], &p, &err) < 0) {
		lg_err_report("luminaguard", &err);
		return 1;
	}
	printf("ok: %zu rules\n", policy_rule_count(p));
	policy_free(p);
	return 0;
}

static json_t *parse_object(const char *what, const char *text)
{
	json_error_t jerr;
	json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);

	if (j == NULL || !json_is_object(j)) {
		fprintf(stderr, "luminaguard: policy classify: %s: %s\n", what,
			j == NULL ? jerr.text : "not a JSON object");
		json_decref(j);
		return NULL;
	}
	return j;
}

static int policy_classify_cmd(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"policy", required_argument, NULL, 'p'},
	    {NULL, 0, NULL, 0},
	};
	struct lg_err *err = NULL;
	struct policy *p = NULL;
	struct policy_decision d = {0};
	const char *file = NULL;
	json_t *args = NULL, *ctx = NULL;
	int c, ret = 2;

	optind = 1;
	while ((c = getopt_long(argc - 1, argv + 1, "+p:", opts, NULL)) != -1) {
		if (c != 'p')
			return 2;
		file = optarg;
	}
	argc -= optind + 1;
	argv += optind + 1;
	if (argc < 1 || argc > 3) {
		fprintf(stderr, "luminaguard: policy classify: expected TOOL [ARGS [CONTEXT]]\n");
		return 2;
	}
	if (argc > 1 && (args = parse_object("ARGS", argv[1])) == NULL)
		goto out;
	if (argc > 2 && (ctx = parse_object("CONTEXT", argv[2])) == NULL)
		goto out;
	if (file != NULL) {
		if (policy_load_file(file, &p, &err) < 0) {
			lg_err_report("luminaguard", &err);
			ret = 1;
			goto out;
		}
	} else {
		p = policy_default();
	}
	policy_classify(p, argv[0], args, ctx, &d);
	printf("%s %s rule=%s: %s\n", policy_verdict_name(d.verdict), policy_risk_name(d.risk),
	       d.rule, d.reason);
	ret = 0;
	policy_decision_clear(&d);
out:
	policy_free(p);
	json_decref(args);
	json_decref(ctx);
	return ret;
}

int cmd_policy(int argc, char **argv)
{
	if (argc < 2) {
		fputs(policy_usage, stderr);
		return 2;
	}
	if (cli_is_help(argv[1]) || (argc > 2 && cli_is_help(argv[2]))) {
		fputs(policy_usage, stdout);
		return 0;
	}
	if (strcmp(argv[1], "check") == 0)
		return policy_check(argc, argv);
	if (strcmp(argv[1], "show") == 0) {
		if (argc > 2) {
			fprintf(stderr, "luminaguard: policy show: unexpected argument '%s'\n",
				argv[2]);
			return 2;
		}
		fputs(policy_default_text(), stdout);
		return 0;
	}
	if (strcmp(argv[1], "classify") == 0)
		return policy_classify_cmd(argc, argv);
	fprintf(stderr,
		"luminaguard: policy: unknown command '%s' (see luminaguard policy --help)\n",
		argv[1]);
	return 2;
}
