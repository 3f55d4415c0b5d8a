/* SPDX-License-Identifier: Apache-2.0 */
/* `luminaguard image`: build, import, list, verify and remove guest images. */
#include "cli/commands.h"

#include "cli/signals.h"
#include "common/err.h"
#include "common/paths.h"
#include "common/sha256.h"
#include "common/util.h"
#include "image/image.h"
#include "image/spec.h"

#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROG "luminaguard"

static const char image_usage[] =
    "Usage: luminaguard image COMMAND [OPTIONS]\n"
    "\n"
    "Manage guest images in the image store: a kernel and an initramfs, plus for\n"
    "\"rootfs\" images a read-only root file system (a Debian userland or your own).\n"
    "\n"
    "Commands:\n"
    "  build [OPTIONS]          build (or rebuild) an image; with --packages or -f,\n"
    "                           a Debian root file system\n"
    "  import NAME ROOTFS.tar   make an image from a root file system tarball\n"
    "  list [--json]            list images with their kind, size, packages and state\n"
    "  verify [NAME]            check an image's files against its manifest\n"
    "  remove NAME              delete an image\n"
    "\n"
    "Run `luminaguard image COMMAND --help` for a command's options.\n";

#define KERNEL_OPTIONS_HELP                                                                        \
	"  -k, --kernel-dir DIR       root of an extracted kernel package, or / for the\n"         \
	"                             host's (default: newest fetched kernel, then /)\n"           \
	"  -K, --kernel-version VER   kernel version in that tree (default: newest)\n"             \
	"      --agent PATH           lg-agent binary (default: the installed one)\n"              \
	"      --busybox PATH         static busybox (default: /bin/busybox)\n"                    \
	"  -m, --module NAME          also include this kernel module (repeatable)\n"

static const char build_usage[] =
    "Usage: luminaguard image build [OPTIONS]\n"
    "\n"
    "Builds a guest image from a Debian kernel, lg-agent and a static busybox.  With\n"
    "--packages, --suite or -f it also builds a Debian root file system with\n"
    "mmdebstrap into the image's rootfs.erofs: a \"rootfs\" image (about a minute;\n"
    "as root, or as a user with subordinate ids in /etc/subuid and /etc/subgid).\n"
    "Without them, an \"initramfs\" image (busybox only).\n"
    "\n"
    "  -n, --name NAME            image name (default: the spec's name, else default)\n"
    "  -p, --packages P1,P2,...   Debian packages to install (ca-certificates always is)\n"
    "  -s, --suite SUITE          Debian suite, e.g. bookworm (default: the spec's,\n"
    "                             else the host's release)\n"
    "  -f, --file SPEC.json       an image spec: name, suite, packages, files, env,\n"
    "                             workdir, user, run; --name, --packages and --suite\n"
    "                             override its values\n"
    "      --compress lz4hc|none  compression of rootfs.erofs (default: "
    "lz4hc)\n" KERNEL_OPTIONS_HELP "  -h, --help                 show this help\n"
    "\n"
    "Examples:\n"
    "  luminaguard image build --packages python3          the image \"default\"\n"
    "  luminaguard image build --name tiny                 busybox only, boots fastest\n"
    "  luminaguard image build -f py.json --name py-test\n"
    "\n"
    "Fetch a kernel without touching /boot with scripts/fetch-kernel.sh.\n"
    "Progress goes to stderr; the image directory is printed on stdout.  On\n"
    "failure or Ctrl-C nothing is left in the image store.\n";

static const char import_usage[] =
    "Usage: luminaguard image import NAME ROOTFS.tar [OPTIONS]\n"
    "\n"
    "Makes the \"rootfs\" image NAME from a root file system tarball (plain, gzip, xz\n"
    "or zstd, told by its content), e.g. `docker export` output.  The tarball is\n"
    "treated as hostile: nothing is written outside the image, device nodes are\n"
    "skipped and setuid/setgid bits cleared (see docs/images.md).\n"
    "\n"
    "      --compress lz4hc|none  compression of rootfs.erofs (default: "
    "lz4hc)\n" KERNEL_OPTIONS_HELP "  -h, --help                 show this help\n"
    "\n"
    "Progress goes to stderr; the image directory is printed on stdout.\n";

static const char list_usage[] =
    "Usage: luminaguard image list [--json]\n"
    "\n"
    "Lists images: name, kind (initramfs or rootfs), total size, installed packages\n"
    "and state: \"ok\", \"CORRUPT: reason\" (the SHA-256 of vmlinux and initramfs.cpio\n"
    "is checked; rootfs.erofs when it changed since it was last verified), or\n"
    "\"stale\" when it was built for another lg-agent than the installed one.\n"
    "Exits 1 if any image is corrupt.\n"
    "\n"
    "      --json                 one JSON array of objects instead of the table\n";

static const char verify_usage[] =
    "Usage: luminaguard image verify [NAME]\n"
    "\n"
    "Checks the SHA-256 of every file of image NAME (default: default) against its\n"
    "manifest, rootfs.erofs included, and records a good rootfs.erofs as verified.\n";

static const char remove_usage[] = "Usage: luminaguard image remove NAME\n"
				   "\n"
				   "Deletes image NAME from the image store.\n";

enum { OPT_AGENT = 256, OPT_BUSYBOX, OPT_COMPRESS, OPT_JSON };

#define KERNEL_OPTIONS                                                                             \
	{"kernel-dir", required_argument, NULL, 'k'},                                              \
	    {"kernel-version", required_argument, NULL, 'K'},                                      \
	    {"agent", required_argument, NULL, OPT_AGENT},                                         \
	    {"busybox", required_argument, NULL, OPT_BUSYBOX},                                     \
	    {"module", required_argument, NULL, 'm'},                                              \
	{                                                                                          \
		"compress", required_argument, NULL, OPT_COMPRESS                                  \
	}

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

/* What build and import share: the kernel options and --compress. */
struct build_args {
	struct lg_image_build_opts o;
	const char **modules; /* NULL-terminated, argc + 1 slots */
	size_t nmod;
	char **packages;
	struct lg_image_spec *spec;
};

static void build_args_clear(struct build_args *a)
{
	free(a->modules);
	lg_strv_free(a->packages);
	lg_image_spec_free(a->spec);
}

/* Returns 1 if c was one of the shared options, -1 (after the message) if its value is bad. */
static int shared_option(const char *cmd, int c, struct build_args *a)
{
	switch (c) {
	case 'k':
		a->o.kernel_dir = optarg;
		return 1;
	case 'K':
		a->o.kernel_version = optarg;
		return 1;
	case OPT_AGENT:
		a->o.agent_path = optarg;
		return 1;
	case OPT_BUSYBOX:
		a->o.busybox_path = optarg;
		return 1;
	case 'm':
		a->modules[a->nmod++] = optarg;
		return 1;
	case OPT_COMPRESS:
		if (strcmp(optarg, "lz4hc") != 0 && strcmp(optarg, "none") != 0) {
			usage_error(cmd, "unknown compression `%s`: use lz4hc or none", optarg);
			return -1;
		}
		a->o.compress = optarg;
		return 1;
	}
	return 0;
}

/*
 * Runs the build with Ctrl-C handled: mmdebstrap, the decompressor and
 * mkfs.erofs share our process group, so the terminal's SIGINT ends them
 * and the step fails; a signal sent to this process alone stops the build
 * at its next step.  Either way lg_image_build() removes its temporary
 * directory, which a process killed by the default action could not.
 */
static int run_build(struct build_args *a)
{
	struct lg_image *img = NULL;
	struct lg_err *err = NULL;
	int sig;

	a->o.progress = print_progress;
	a->o.extra_modules = a->modules;
	if (lg_signals_install(&err) < 0) {
		lg_err_report(PROG, &err);
		return 1;
	}
	a->o.cancelled = lg_signals_caught;
	if (lg_image_build(&a->o, &img, &err) < 0) {
		lg_err_report(PROG, &err);
		sig = lg_signals_caught();
		return sig ? 128 + sig : 1;
	}
	printf("%s\n", img->dir);
	lg_image_free(img);
	return 0;
}

/* An image name for build or import, or a usage error saying what a name may be. */
static bool name_ok(const char *cmd, const char *name)
{
	if (lg_image_name_valid(name))
		return true;
	usage_error(cmd,
		    "invalid image name `%s`: use 1 to %d letters, digits, '.', '_' or '-', "
		    "not starting with '.'",
		    name, LG_IMAGE_NAME_MAX);
	return false;
}

/* Appends the packages of csv to *v (--packages may be repeated). */
static int add_packages(const char *csv, char ***v)
{
	struct lg_err *err = NULL;
	char **more = NULL;
	size_t n = 0, m = 0;

	if (lg_package_list_parse(csv, &more, &err) < 0) {
		usage_error("build", "--packages: %s", err->msg);
		lg_err_free(&err);
		return -1;
	}
	while (*v != NULL && (*v)[n] != NULL)
		n++;
	while (more[m] != NULL)
		m++;
	*v = xrealloc(*v, (n + m + 1) * sizeof(char *));
	memcpy(*v + n, more, (m + 1) * sizeof(char *));
	free(more);
	return 0;
}

static int image_build(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"name", required_argument, NULL, 'n'},
	    {"packages", required_argument, NULL, 'p'},
	    {"suite", required_argument, NULL, 's'},
	    {"file", required_argument, NULL, 'f'},
	    KERNEL_OPTIONS,
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct build_args a = {.modules = xzalloc(sizeof(char *) * (size_t)(argc + 1))};
	struct lg_err *err = NULL;
	int c, r;

	optind = 0;
	while ((c = getopt_long(argc, argv, ":n:p:s:f:k:K:m:h", opts, NULL)) != -1) {
		if ((r = shared_option("build", c, &a)) != 0) {
			if (r < 0)
				goto out_usage;
			continue;
		}
		switch (c) {
		case 'n':
			a.o.name = optarg;
			break;
		case 'p':
			if (add_packages(optarg, &a.packages) < 0)
				goto out_usage;
			break;
		case 's':
			a.o.suite = optarg;
			break;
		case 'f':
			a.o.spec_path = optarg;
			break;
		case 'h':
			fputs(build_usage, stdout);
			build_args_clear(&a);
			return 0;
		default:
			bad_option("build", c, argv);
			goto out_usage;
		}
	}
	if (optind < argc) {
		usage_error("build", "unexpected argument `%s`", argv[optind]);
		goto out_usage;
	}
	if (a.o.name != NULL && !name_ok("build", a.o.name))
		goto out_usage;
	if (a.o.suite != NULL && !lg_suite_name_valid(a.o.suite)) {
		usage_error("build", "invalid suite `%s`: a Debian suite such as bookworm",
			    a.o.suite);
		goto out_usage;
	}
	if (a.o.compress != NULL && a.packages == NULL && a.o.suite == NULL &&
	    a.o.spec_path == NULL) {
		usage_error("build", "--compress is for root file system images: add --packages "
				     "or -f (an initramfs image has no rootfs.erofs)");
		goto out_usage;
	}
	if (a.o.spec_path != NULL) {
		if (lg_image_spec_load(a.o.spec_path, &a.spec, &err) < 0) {
			lg_err_report(PROG, &err);
			build_args_clear(&a);
			return 1;
		}
		a.o.spec = a.spec;
	}
	a.o.packages = (const char *const *)a.packages;
	r = run_build(&a);
	build_args_clear(&a);
	return r;
out_usage:
	build_args_clear(&a);
	return 2;
}

static int image_import(int argc, char **argv)
{
	static const struct option opts[] = {
	    KERNEL_OPTIONS,
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct build_args a = {.modules = xzalloc(sizeof(char *) * (size_t)(argc + 1))};
	int c, r;

	optind = 0;
	while ((c = getopt_long(argc, argv, ":k:K:m:h", opts, NULL)) != -1) {
		if ((r = shared_option("import", c, &a)) != 0) {
			if (r < 0)
				goto out_usage;
			continue;
		}
		if (c == 'h') {
			fputs(import_usage, stdout);
			build_args_clear(&a);
			return 0;
		}
		bad_option("import", c, argv);
		goto out_usage;
	}
	if (argc - optind < 2) {
		usage_error("import", argc - optind == 0 ? "missing image name and tarball"
							 : "missing the rootfs tarball");
		goto out_usage;
	}
	if (argc - optind > 2) {
		usage_error("import", "unexpected argument `%s`", argv[optind + 2]);
		goto out_usage;
	}
	if (!name_ok("import", argv[optind]))
		goto out_usage;
	a.o.name = argv[optind];
	a.o.import_tar = argv[optind + 1];
	r = run_build(&a);
	build_args_clear(&a);
	return r;
out_usage:
	build_args_clear(&a);
	return 2;
}

/* Sizes in MiB with one decimal: images differ by a few MiB at 50 to 500. */
static void mib_size(uint64_t n, char buf[32])
{
	snprintf(buf, 32, "%.1f MiB", (double)n / (1 << 20));
}

/* "sha256:<hex>" of the lg-agent a build would use now, or NULL when there is none. */
static char *installed_agent(void)
{
	cleanup_free char *path = lg_find_helper("lg-agent");
	char hex[LG_SHA256_HEX_LEN + 1];

	if (path == NULL || lg_sha256_file(path, hex, NULL) < 0)
		return NULL;
	return xasprintf("sha256:%s", hex);
}

static int image_list(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"json", no_argument, NULL, OPT_JSON},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	cleanup_free char *agent = NULL;
	char **names = NULL;
	struct lg_err *err = NULL;
	json_t *arr = NULL;
	bool as_json = false;
	int status = 0;
	int c;

	optind = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (c == 'h') {
			fputs(list_usage, stdout);
			return 0;
		}
		if (c != OPT_JSON)
			return bad_option("list", c, argv);
		as_json = true;
	}
	if (optind < argc)
		return usage_error("list", "unexpected argument `%s`", argv[optind]);
	if (lg_image_list(&names, &err) < 0) {
		lg_err_report(PROG, &err);
		return 1;
	}
	agent = installed_agent();
	if (as_json) {
		arr = json_array();
	} else if (names[0] == NULL) {
		cleanup_free char *dir = lg_images_dir();
		fprintf(
		    stderr,
		    "%s: no images in `%s`; build one with: %s image build --packages python3\n",
		    PROG, dir, PROG);
	} else {
		printf("%-16s %-9s %10s %8s  %s\n", "NAME", "KIND", "SIZE", "PACKAGES", "STATE");
	}
	for (char **n = names; *n != NULL; n++) {
		struct lg_image *img = NULL;
		cleanup_free char *state = NULL;
		const char *word = "ok";
		char size[32] = "-", pkgs[16] = "-";
		uint64_t bytes = 0;

		if (lg_image_check(*n, &img, &err) < 0) {
			word = "corrupt";
			state = xasprintf("CORRUPT: %s", err ? err->msg : "unknown error");
			status = 1;
		} else {
			bytes = img->kernel_size + img->initrd_size + img->rootfs_size;
			mib_size(bytes, size);
			if (img->kind == LG_IMAGE_ROOTFS)
				snprintf(pkgs, sizeof(pkgs), "%u", img->installed_packages);
			/* The agent is the guest's half of the protocol: another one may not
			 * speak this host's version. */
			if (agent != NULL && strcmp(img->agent, agent) != 0) {
				word = "stale";
				state = xasprintf("stale: built for another lg-agent; rebuild it "
						  "with: %s",
						  img->rebuild);
			} else {
				state = xstrdup("ok");
			}
		}
		if (as_json) {
			json_t *o = json_pack("{s:s, s:s, s:s}", "name", *n, "state", word,
					      "message", state);
			if (img != NULL) {
				json_object_set_new(o, "kind",
						    json_string(lg_image_kind_name(img->kind)));
				json_object_set_new(o, "size", json_integer((json_int_t)bytes));
				json_object_set_new(o, "kernel_version",
						    json_string(img->kernel_version));
				json_object_set_new(o, "installed_packages",
						    img->kind == LG_IMAGE_ROOTFS
							? json_integer(img->installed_packages)
							: json_null());
				json_object_set_new(o, "rebuild", json_string(img->rebuild));
			}
			json_array_append_new(arr, o);
		} else {
			printf("%-16s %-9s %10s %8s  %s\n", *n,
			       img ? lg_image_kind_name(img->kind) : "-", size, pkgs, state);
		}
		lg_err_free(&err);
		lg_image_free(img);
	}
	if (as_json) {
		char *text = json_dumps(arr, JSON_INDENT(2));
		if (text != NULL)
			printf("%s\n", text);
		free(text);
		json_decref(arr);
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
    {"build", image_build},   {"import", image_import}, {"list", image_list},
    {"verify", image_verify}, {"remove", image_remove},
};

int cmd_image(int argc, char **argv)
{
	const char *sub = argc > 1 ? argv[1] : NULL;

	if (sub == NULL) {
		fprintf(stderr,
			"%s image: missing command: build, import, list, verify or remove (see: %s "
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
