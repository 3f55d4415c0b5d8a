/* SPDX-License-Identifier: Apache-2.0 */
#include "common/log.h"

#include "common/env.h"
#include "common/util.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum lg_log_level log_level = LG_LOG_WARN;
static bool log_json;
static __thread char log_request_id[65];

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void lg_log_init(void)
{
	const struct lg_env *e = lg_env();

	log_level = e->log_level;
	log_json = e->log_json;
	for (const char *const *w = lg_env_warnings(); *w != NULL; w++)
		lg_warn("%s", *w);
}

void lg_log_set_level(enum lg_log_level level)
{
	log_level = level;
}

enum lg_log_level lg_log_get_level(void)
{
	return log_level;
}

void lg_log_set_request_id(const char *id)
{
	snprintf(log_request_id, sizeof(log_request_id), "%s", id != NULL ? id : "");
}

void lg_log(enum lg_log_level level, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	if (level > log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);

	if (log_json) {
		struct timespec ts;
		json_t *o;
		char *line;

		clock_gettime(CLOCK_REALTIME, &ts);
		o = json_pack("{s:f, s:s, s:s, s:i}", "ts",
			      (double)ts.tv_sec + (double)ts.tv_nsec / 1e9, "level",
			      level_names[level], "msg", msg, "pid", (int)getpid());
		if (o != NULL && log_request_id[0] != '\0')
			json_object_set_new(o, "request_id", json_string(log_request_id));
		line = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
		if (line != NULL)
			fprintf(stderr, "%s\n", line);
		free(line);
		json_decref(o);
		return;
	}
	/*
	 * One message, one line: messages quote what guests and clients sent
	 * (host names, reasons, paths), and a newline or an escape sequence
	 * there could forge a log line or repaint the terminal.  (JSON lines
	 * are escaped by the encoder.)
	 */
	for (char *p = msg; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	fprintf(stderr, "luminaguard: %s%s%s%s%s\n",
		level == LG_LOG_WARN	? "warning: "
		: level == LG_LOG_DEBUG ? "debug: "
					: "",
		msg, log_request_id[0] != '\0' ? " [req " : "", log_request_id,
		log_request_id[0] != '\0' ? "]" : "");
}
