/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Image spec files: `luminaguard image build -f SPEC.json`.  A small JSON
 * object a user keeps in git naming what goes into a Debian userland image
 * (suite, packages, files to copy in, environment, working directory,
 * default user, commands run at build time).  The file is read strictly:
 * an unknown or repeated key, a wrong type, a bad name or path is one line
 * "ORIGIN:LINE: what is wrong".  See docs/images.md, "Image spec files".
 */
#ifndef LG_IMAGE_SPEC_H
#define LG_IMAGE_SPEC_H

#include <stdbool.h>
#include <stddef.h>

struct lg_err;

/* Bounds: a hostile spec file cannot make the parser allocate without limit. */
#define LG_SPEC_FILE_MAX     (1u << 20) /* bytes in a spec file */
#define LG_SPEC_PACKAGES_MAX 1024
#define LG_SPEC_FILES_MAX    1024
#define LG_SPEC_ENV_MAX	     1024
#define LG_SPEC_RUN_MAX	     1024
#define LG_SPEC_PATH_MAX     4095  /* a src, dst or workdir, in bytes */
#define LG_SPEC_ENV_KEY_MAX  255   /* an environment variable's name */
#define LG_SPEC_ENV_VAL_MAX  32768 /* an environment variable's value */
#define LG_SPEC_RUN_LEN_MAX  65536 /* one build-time command */
#define LG_PACKAGE_NAME_MAX  128
#define LG_SUITE_NAME_MAX    64
#define LG_USER_NAME_MAX     32

struct lg_image_file {
	char *src;     /* host path, made absolute against the spec file's directory */
	char *dst;     /* absolute path in the image */
	unsigned mode; /* 0 = keep the source's mode bits; else 1..07777 from "mode": "0644" */
};

struct lg_image_spec {
	char *name;	 /* may be NULL (the CLI's --name or "default" then) */
	char *suite;	 /* may be NULL: the host's release */
	char **packages; /* NULL-terminated, may be empty, never NULL */
	struct lg_image_file *files;
	size_t nfiles;
	char **env; /* "KEY=VALUE", NULL-terminated, never NULL; from an object {"KEY": "VALUE"} */
	char *workdir; /* absolute, may be NULL */
	char *user;    /* may be NULL: root */
	char **run;    /* shell commands run at build time inside the image root, in order;
			  NULL-terminated, never NULL */
};

/*
 * Parses text (len bytes, need not be NUL-terminated, at most
 * LG_SPEC_FILE_MAX).  origin names the file in messages ("spec.json");
 * base_dir resolves relative "src" paths (NULL: the current directory; a
 * relative one is taken from the current directory).  Errors are one
 * printable line, EINVAL, e.g.
 * "spec.json:3: unknown key \"pakages\" (known: name, suite, packages, files, env, workdir, user,
 * run)". Does not keep text; on success *out is new, free with lg_image_spec_free().
 */
int lg_image_spec_parse(const char *text, size_t len, const char *origin, const char *base_dir,
			struct lg_image_spec **out, struct lg_err **err);

/* Reads PATH (a regular file of at most LG_SPEC_FILE_MAX bytes) and parses it
 * with origin = PATH and base_dir = its directory. */
int lg_image_spec_load(const char *path, struct lg_image_spec **out, struct lg_err **err);

void lg_image_spec_free(struct lg_image_spec *s);

/* Validators shared with the CLI (--packages, --suite, --user): */
bool lg_package_name_valid(const char *s); /* Debian policy: [a-z0-9][a-z0-9+.-]+, at most 128 */
bool lg_suite_name_valid(const char *s);   /* [a-z0-9][a-z0-9.-]{0,63}: bookworm, stable, noble */
bool lg_user_name_valid(const char *s);	   /* [a-z_][a-z0-9_-]{0,31} */

/*
 * Splits "a,b,c" (--packages) into a new NULL-terminated vector (free with
 * lg_strv_free).  Spaces around a name are dropped; an empty list, an empty
 * item or an invalid name is an error (EINVAL) naming it.
 */
int lg_package_list_parse(const char *csv, char ***out, struct lg_err **err);

#endif
