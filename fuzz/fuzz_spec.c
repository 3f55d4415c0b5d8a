/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzzes the image spec reader: a spec file may come from anyone's
 * repository.  Every input must end in either a spec whose every field
 * obeys the documented rules (checked here again, independently of the
 * reader) or one printable line "fuzz.json:LINE: ..." with EINVAL.  The
 * same bytes, as a C string, go through the --packages splitter.
 */
#include "common/err.h"
#include "common/util.h"
#include "image/image.h"
#include "image/spec.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_msg(const struct lg_err *err, const char *prefix)
{
	if (err == NULL || err->errnum != EINVAL || strncmp(err->msg, prefix, strlen(prefix)) != 0)
		abort();
	for (const char *c = err->msg; *c; c++)
		if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
			abort();
}

static void check_image_path(const char *p)
{
	size_t n = strlen(p);

	if (p[0] != '/' || n > LG_SPEC_PATH_MAX || strstr(p, "/../") != NULL ||
	    (n >= 3 && strcmp(p + n - 3, "/..") == 0))
		abort();
}

static size_t count(char **v)
{
	size_t n = 0;

	if (v == NULL)
		abort();
	while (v[n] != NULL)
		n++;
	return n;
}

static void check_spec(const struct lg_image_spec *s)
{
	if (s->name && !lg_image_name_valid(s->name))
		abort();
	if (s->suite && !lg_suite_name_valid(s->suite))
		abort();
	if (s->user && !lg_user_name_valid(s->user))
		abort();
	if (s->workdir)
		check_image_path(s->workdir);
	if (count(s->packages) > LG_SPEC_PACKAGES_MAX)
		abort();
	for (char **p = s->packages; *p; p++)
		if (!lg_package_name_valid(*p))
			abort();
	if (s->nfiles > LG_SPEC_FILES_MAX || (s->nfiles > 0) != (s->files != NULL))
		abort();
	for (size_t i = 0; i < s->nfiles; i++) {
		const struct lg_image_file *f = &s->files[i];
		if (f->src == NULL || f->src[0] != '/' || strlen(f->src) > LG_SPEC_PATH_MAX ||
		    f->dst == NULL || f->dst[strlen(f->dst) - 1] == '/' || f->mode > 07777)
			abort();
		check_image_path(f->dst);
	}
	if (count(s->env) > LG_SPEC_ENV_MAX)
		abort();
	for (char **e = s->env; *e; e++) {
		const char *eq = strchr(*e, '=');
		if (eq == NULL || eq == *e || (size_t)(eq - *e) > LG_SPEC_ENV_KEY_MAX ||
		    strlen(eq + 1) > LG_SPEC_ENV_VAL_MAX || (**e >= '0' && **e <= '9'))
			abort();
		for (const char *c = *e; c < eq; c++)
			if (!((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') ||
			      (*c >= '0' && *c <= '9') || *c == '_'))
				abort();
	}
	if (count(s->run) > LG_SPEC_RUN_MAX)
		abort();
	for (char **r = s->run; *r; r++)
		if (**r == '\0' || strlen(*r) > LG_SPEC_RUN_LEN_MAX)
			abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct lg_image_spec *s = NULL;
	struct lg_err *err = NULL;
	char **v = NULL;
	char *str;
	int ret;

	ret = lg_image_spec_parse((const char *)data, size, "fuzz.json",
				  (size & 1) ? "/base" : NULL, &s, &err);
	if (ret < 0) {
		if (s != NULL || ret != -EINVAL)
			abort();
		check_msg(err, "fuzz.json:");
		lg_err_free(&err);
	} else {
		if (ret != 0 || err != NULL || s == NULL)
			abort();
		check_spec(s);
		lg_image_spec_free(s);
	}

	str = xmalloc(size + 1);
	memcpy(str, data, size);
	str[size] = '\0';
	ret = lg_package_list_parse(str, &v, &err);
	if (ret < 0) {
		if (v != NULL)
			abort();
		check_msg(err, "");
		lg_err_free(&err);
	} else {
		if (err != NULL || count(v) == 0 || count(v) > LG_SPEC_PACKAGES_MAX)
			abort();
		for (char **p = v; *p; p++)
			if (!lg_package_name_valid(*p))
				abort();
		lg_strv_free(v);
	}
	free(str);
	return 0;
}
