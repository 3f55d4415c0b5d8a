/* SPDX-License-Identifier: Apache-2.0 */
/* `luminaguard image`: build, list, verify and remove guest images. */
#include "cli/commands.h"

#include "common/err.h"
#include "common/paths.h"
#include "common/util.h"
#include "image/image.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define PROG "luminaguard"

static const char image_usage[] =
    "Usage: luminaguard image COMMAND [OPTIONS]\n"
    "\n"
    "Manage guest images (kernel + initramfs) in the image store.\n"
    "\n"
    "Commands:\n"
    "  build [OPTIONS]   build (or rebuild) an image\n"
    "  list              list images with their kernel, size and state\n"
    "  verify [NAME]     check an image's files against its manifest\n"
    "  remove NAME       delete an image\n"
    "\n"
    "Run `luminaguard image COMMAND --help` for a command's options.\n";

static const char build_usage[] =
    "Usage: luminaguard image build [OPTIONS]\n"
    "\n"
    "Builds a guest image from a Debian kernel, lg-agent and a static busybox.\n"
    "\n"
    "  -n, --name NAME            image name (default: default)\n"
    "  -k, --kernel-dir DIR       root of an extracted kernel package, or / for the\n"
    "                             host's (default: newest fetched kernel, then /)\n"
    "  -K, --kernel-version VER   kernel version in that tree (default: newest)\n"
    "      --agent PATH           lg-agent binary (default: the installed one)\n"
    "      --busybox PATH         static busybox (default: /bin/busybox)\n"
    "  -m, --module NAME          also include this kernel module (repeatable)\n"
    "  -h, --help                 show this help\n"
    "\n"
    "Fetch a kernel without touching /boot with scripts/fetch-kernel.sh.\n"
    "Progress goes to stderr; the image directory is printed on stdout.\n";

static const char list_usage[] = "Usage: luminaguard image list\n"
				 "\n"
				 "Lists images: name, kernel version, total size, and \"ok\" or\n"
				 "\"CORRUPT: reason\" after checking every file's SHA-256.\n";

static const char verify_usage[] = "Usage: luminaguard image verify [NAME]\n"
				   "\n"
				   "Checks the SHA-256 of every file of image NAME (default:\n"
				   "default) against its manifest.\n";

static const char remove_usage[] = "Usage: luminaguard image remove NAME\n"
				   "\n"
				   "Deletes image NAME from the image store.\n";

enum { OPT_AGENT = 256, OPT_BUSYBOX };

static int usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s image %s: ", PROG, cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (see: %s image %s --help)\n", PROG, cmd);
	return 2;
}

/*
 * Reports a getopt_long failure.  ret is ':' (missing argument) or '?'
 * (unknown option); optstring starts with ':' so getopt prints nothing.
 */
static int bad_option(const char *cmd, int ret, char **argv)
{
	char shortopt[3] = {'-', (char)optopt, '\0'};

	/* After a missing value, optind has moved past the option as typed. */
	if (ret == ':')
		return usage_error(cmd, "option `%s` needs a value", argv[optind - 1]);
	return usage_error(cmd, "unknown option `%s`", optopt ? shortopt : argv[optind - 1]);
}

/* Parses a command that takes only --help and at most max_pos positional arguments. */
static int simple_args(const char *cmd, const char *usage, int argc, char **argv, int max_pos,
		       int min_pos)
{
	static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
	int c;

	optind = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (c == 'h') {
			fputs(usage, stdout);
			return 0;
		}
		return bad_option(cmd, c, argv);
	}
	if (argc - optind > max_pos)
		return usage_error(cmd, "unexpected argument `%s`", argv[optind + max_pos]);
	if (argc - optind < min_pos)
		return usage_error(cmd, "missing image name");
	return -1;
}

static void print_progress(void *data, const char *msg)
{
	fprintf(stderr, "%s: %s\n", PROG, msg);
}

static int image_build(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"name", required_argument, NULL, 'n'},
	    {"kernel-dir", required_argument, NULL, 'k'},
	    {"kernel-version", required_argument, NULL, 'K'},
	    {"agent", required_argument, NULL, OPT_AGENT},
	    {"busybox", required_argument, NULL, OPT_BUSYBOX},
	    {"module", required_argument, NULL, 'm'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct lg_image_build_opts o = {.progress = print_progress};
	cleanup_free const char **modules = xzalloc(sizeof(*modules) * (size_t)(argc + 1));
	struct lg_image *img = NULL;
	struct lg_err *err = NULL;
	size_t nmod = 0;
	int c;

	optind = 0;
	while ((c = getopt_long(argc, argv, ":n:k:K:m:h", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			o.name = optarg;
			break;
		case 'k':
			o.kernel_dir = optarg;
			break;
		case 'K':
			o.kernel_version = optarg;
			break;
		case OPT_AGENT:
			o.agent_path = optarg;
			break;
		case OPT_BUSYBOX:
			o.busybox_path = optarg;
			break;
		case 'm':
			modules[nmod++] = optarg;
			break;
		case 'h':
			fputs(build_usage, stdout);
			return 0;
		default:
			return bad_option("build", c, argv);
		}
	}
	if (optind < argc)
		return usage_error("build", "unexpected argument `%s`", argv[optind]);
	if (o.name != NULL && !lg_image_name_valid(o.name))
		return usage_error(
		    "build", "invalid image name `%s`: use letters, digits, '.', '_', '-'", o.name);
	o.extra_modules = modules;
	if (lg_image_build(&o, &img, &err) < 0) {
		lg_err_report(PROG, &err);
		return 1;
	}
	printf("%s\n", img->dir);
	lg_image_free(img);
	return 0;
}

static void human_size(uint64_t n, char buf[32])
{
	if (n >= 10ull << 20)
		snprintf(buf, 32, "%lluM", (unsigned long long)(n >> 20));
	else if (n >= 1ull << 20)
		snprintf(buf, 32, "%.1fM", (double)n / (1 << 20));
	else
		snprintf(buf, 32, "%lluK", (unsigned long long)((n + 1023) >> 10));
}

static int image_list(int argc, char **argv)
{
	char **names = NULL;
	struct lg_err *err = NULL;
	int status = 0;
	int r = simple_args("list", list_usage, argc, argv, 0, 0);

	if (r >= 0)
		return r;
	if (lg_image_list(&names, &err) < 0) {
		lg_err_report(PROG, &err);
		return 1;
	}
	if (names[0] == NULL) {
		cleanup_free char *dir = lg_images_dir();
		fprintf(stderr, "%s: no images in `%s`; build one with: %s image build\n", PROG,
			dir, PROG);
	}
	for (char **n = names; *n != NULL; n++) {
		struct lg_image *img = NULL;
		char size[32] = "-";
		const char *kver = "-";

		if (lg_image_open(*n, &img, NULL) == 0) {
			human_size(img->kernel_size + img->initrd_size, size);
			kver = img->kernel_version;
		}
		if (lg_image_verify(*n, &err) == 0) {
			printf("%-16s %-24s %7s ok\n", *n, kver, size);
		} else {
			printf("%-16s %-24s %7s CORRUPT: %s\n", *n, kver, size,
			       err ? err->msg : "unknown error");
			lg_err_free(&err);
			status = 1;
		}
		lg_image_free(img);
	}
	lg_strv_free(names);
	return status;
}

static int image_verify(int argc, char **argv)
{
	struct lg_err *err = NULL;
	const char *name;
	int r = simple_args("verify", verify_usage, argc, argv, 1, 0);

	if (r >= 0)
		return r;
	name = optind < argc ? argv[optind] : "default";
	if (lg_image_verify(name, &err) < 0) {
		lg_err_report(PROG, &err);
		return 1;
	}
	printf("%s: ok\n", name);
	return 0;
}

static int image_remove(int argc, char **argv)
{
	struct lg_err *err = NULL;
	int r = simple_args("remove", remove_usage, argc, argv, 1, 1);

	if (r >= 0)
		return r;
	if (lg_image_remove(argv[optind], &err) < 0) {
		lg_err_report(PROG, &err);
		return 1;
	}
	fprintf(stderr, "%s: removed image '%s'\n", PROG, argv[optind]);
	return 0;
}

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
} image_cmds[] = {
    {"build", image_build},
    {"list", image_list},
    {"verify", image_verify},
    {"remove", image_remove},
};

int cmd_image(int argc, char **argv)
{
	const char *sub = argc > 1 ? argv[1] : NULL;

	if (sub == NULL) {
		fprintf(stderr,
			"%s image: missing command: build, list, verify or remove (see: %s "
			"image --help)\n",
			PROG, PROG);
		return 2;
	}
	if (cli_is_help(sub) || strcmp(sub, "help") == 0) {
		fputs(image_usage, stdout);
		return 0;
	}
	for (size_t i = 0; i < ARRAY_SIZE(image_cmds); i++)
		if (strcmp(sub, image_cmds[i].name) == 0)
			return image_cmds[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "%s image: unknown command `%s` (see: %s image --help)\n", PROG, sub, PROG);
	return 2;
}
