/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The sandbox tools, and the approval cliff in front of each of them:
 * every call is classified by the policy and recorded in the audit log; a
 * red call waits for a human (MCP elicitation, or `luminaguard approvals`
 * over the control socket) and runs only on an explicit yes.
 */
#include "mcp/internal.h"

#include "approval/tty.h"
#include "audit/audit.h"
#include "common/sha256.h"
#include "common/encoding.h"
#include "common/log.h"
#include "common/util.h"
#include "policy/policy.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OUTPUT_CAP    (1u << 20) /* per stream of one exec */
#define READ_CAP      (1u << 20) /* sandbox_fs_read */
#define MAX_EXEC_ARGS 1024
#define MAX_TIMEOUT_S 86400

struct tool {
	const char *name;
	const char *description;
	const char *schema;	 /* JSON Schema of the arguments */
	const char *annotations; /* MCP tool annotations */
	json_t *(*run)(struct mcp_session *ss, struct mcp_call *call, const json_t *args);
};

/* ---- results ---- */

static json_t *tool_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static json_t *tool_error(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return json_pack("{s:[{s:s, s:s}], s:b}", "content", "type", "text", "text", msg, "isError",
			 1);
}

/* A successful result: the structured value, and the same as text for older clients. */
static json_t *tool_ok(json_t *structured, const char *text)
{
	char *dump = text == NULL ? json_dumps(structured, JSON_COMPACT) : NULL;
	json_t *r = json_pack("{s:[{s:s, s:s}], s:o, s:b}", "content", "type", "text", "text",
			      text != NULL ? text : (dump != NULL ? dump : ""), "structuredContent",
			      structured, "isError", 0);
	free(dump);
	return r;
}

/* ---- argument helpers: type errors become tool errors the model can fix ---- */

static int arg_uint(const json_t *args, const char *key, uint64_t min, uint64_t max, uint64_t def,
		    uint64_t *out, char *why, size_t whylen)
{
	const json_t *v = json_object_get(args, key);

	if (v == NULL || json_is_null(v)) {
		*out = def;
		return 0;
	}
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    (uint64_t)json_integer_value(v) < min || (uint64_t)json_integer_value(v) > max) {
		snprintf(why, whylen, "%s must be an integer in %llu..%llu", key,
			 (unsigned long long)min, (unsigned long long)max);
		return -1;
	}
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

static int arg_str(const json_t *args, const char *key, bool required, const char **out, char *why,
		   size_t whylen)
{
	const json_t *v = json_object_get(args, key);

	*out = NULL;
	if (v == NULL || json_is_null(v)) {
		if (!required)
			return 0;
		snprintf(why, whylen, "%s is required", key);
		return -1;
	}
	if (!json_is_string(v) || memchr(json_string_value(v), '\0', json_string_length(v))) {
		snprintf(why, whylen, "%s must be a string without NUL bytes", key);
		return -1;
	}
	*out = json_string_value(v);
	return 0;
}

static int arg_bool(const json_t *args, const char *key, bool def, bool *out, char *why,
		    size_t whylen)
{
	const json_t *v = json_object_get(args, key);

	if (v == NULL || json_is_null(v)) {
		*out = def;
		return 0;
	}
	if (!json_is_boolean(v)) {
		snprintf(why, whylen, "%s must be a boolean", key);
		return -1;
	}
	*out = json_is_true(v);
	return 0;
}

/* ---- exec ---- */

struct capture {
	struct lg_buf out, err;
	bool out_cut, err_cut;
};

static int capture_output(void *ctx, enum lg_stream s, const uint8_t *p, size_t n)
{
	struct capture *c = ctx;
	struct lg_buf *b = s == LG_STREAM_STDOUT ? &c->out : &c->err;
	bool *cut = s == LG_STREAM_STDOUT ? &c->out_cut : &c->err_cut;
	size_t room = b->len < OUTPUT_CAP ? OUTPUT_CAP - b->len : 0;

	/* Keep the head and drop the rest: the command still runs to its end. */
	if (n > room) {
		*cut = true;
		n = room;
	}
	lg_buf_append(b, p, n);
	return 0;
}

struct exec_args {
	char **argv;
	size_t argc;
	char **env;
	size_t envc;
	const char *cwd;
	const char *user;
	const char *stdin_text;
	uint32_t timeout_ms;
};

static void exec_args_free(struct exec_args *e)
{
	for (size_t i = 0; i < e->argc; i++)
		free(e->argv[i]);
	free(e->argv);
	for (size_t i = 0; i < e->envc; i++)
		free(e->env[i]);
	free(e->env);
}

static void strv_add(char ***v, size_t *n, char *s)
{
	*v = xrealloc(*v, (*n + 2) * sizeof(char *));
	(*v)[(*n)++] = s;
	(*v)[*n] = NULL;
}

static int parse_exec_args(const json_t *args, struct exec_args *e, char *why, size_t whylen)
{
	const json_t *argv = json_object_get(args, "argv");
	const json_t *env = json_object_get(args, "env");
	const char *command = NULL;
	uint64_t timeout_s;

	memset(e, 0, sizeof(*e));
	if (arg_str(args, "command", false, &command, why, whylen) < 0 ||
	    arg_str(args, "cwd", false, &e->cwd, why, whylen) < 0 ||
	    arg_str(args, "user", false, &e->user, why, whylen) < 0 ||
	    arg_str(args, "stdin", false, &e->stdin_text, why, whylen) < 0 ||
	    arg_uint(args, "timeout", 0, MAX_TIMEOUT_S, 0, &timeout_s, why, whylen) < 0)
		return -1;
	e->timeout_ms = (uint32_t)(timeout_s * 1000u);
	if (e->user != NULL && !lg_exec_user_valid(e->user)) {
		snprintf(why, whylen, "user must be a user name of the image or a numeric uid");
		return -1;
	}
	if ((command == NULL) == (argv == NULL || json_is_null(argv))) {
		snprintf(why, whylen, "give exactly one of command (a shell command line) or argv");
		return -1;
	}
	if (command != NULL) {
		strv_add(&e->argv, &e->argc, xstrdup("/bin/sh"));
		strv_add(&e->argv, &e->argc, xstrdup("-c"));
		strv_add(&e->argv, &e->argc, xstrdup(command));
	} else {
		size_t i;
		json_t *v;

		if (!json_is_array(argv) || json_array_size(argv) == 0 ||
		    json_array_size(argv) > MAX_EXEC_ARGS) {
			snprintf(why, whylen,
				 "argv must be a non-empty array of at most %d strings",
				 MAX_EXEC_ARGS);
			return -1;
		}
		json_array_foreach(argv, i, v)
		{
			if (!json_is_string(v) ||
			    memchr(json_string_value(v), '\0', json_string_length(v))) {
				snprintf(why, whylen,
					 "argv[%zu] must be a string without NUL bytes", i);
				return -1;
			}
			strv_add(&e->argv, &e->argc, xstrdup(json_string_value(v)));
		}
	}
	if (env != NULL && !json_is_null(env)) {
		const char *k;
		json_t *v;

		if (!json_is_object(env)) {
			snprintf(why, whylen, "env must be an object of strings");
			return -1;
		}
		json_object_foreach((json_t *)env, k, v)
		{
			if (!json_is_string(v) || *k == '\0' || strchr(k, '=') != NULL ||
			    memchr(json_string_value(v), '\0', json_string_length(v))) {
				snprintf(why, whylen, "env.%s must be a string (and a valid name)",
					 k);
				return -1;
			}
			strv_add(&e->env, &e->envc, xasprintf("%s=%s", k, json_string_value(v)));
		}
	}
	return 0;
}

static json_t *json_text(const struct lg_buf *b)
{
	size_t n;
	cleanup_free char *s =
	    lg_utf8_sanitize(b->data != NULL ? b->data : (const uint8_t *)"", b->len, &n);
	return json_stringn(s, n);
}

/* Runs e in lsb; returns the tool result. */
static json_t *run_exec(struct mcp_server *srv, struct lg_sandbox *lsb, const struct exec_args *e,
			int cancel_fd, bool *broken)
{
	struct capture c = {0};
	struct lg_exec_opts o = {
	    .cancel_fd = cancel_fd,
	    .argv = e->argv,
	    .env = e->env,
	    .cwd = e->cwd,
	    .user = e->user,
	    .timeout_ms = e->timeout_ms,
	    .stdin_fd = -1,
	    .stdin_data = e->stdin_text,
	    .stdin_len = e->stdin_text != NULL ? strlen(e->stdin_text) : 0,
	    .on_output = capture_output,
	    .ctx = &c,
	};
	struct lg_exec_result res;
	struct lg_err *err = NULL;
	json_t *st;
	char *text;

	uint64_t t0 = lg_now_ms();
	int ret = lg_sandbox_exec(lsb, &o, &res, &err);

	lg_metric_observe(lg_metric_child(srv->m.exec_seconds, NULL),
			  (double)(lg_now_ms() - t0) / 1000.0);
	if (ret < 0) {
		json_t *r = tool_error("exec failed: %s", err->msg);
		*broken = lg_agent_ping(lsb->agent, NULL) < 0;
		lg_err_free(&err);
		lg_buf_free(&c.out);
		lg_buf_free(&c.err);
		return r;
	}
	st = json_pack("{s:i, s:i, s:b, s:o, s:o, s:b, s:b}", "exit_code", res.exit_code, "signal",
		       res.signal, "timed_out", res.timed_out, "stdout", json_text(&c.out),
		       "stderr", json_text(&c.err), "stdout_truncated", c.out_cut,
		       "stderr_truncated", c.err_cut);
	char status[32];
	if (res.timed_out)
		snprintf(status, sizeof(status), "timed out (killed)");
	else if (res.signal != 0)
		snprintf(status, sizeof(status), "killed by a signal");
	else
		snprintf(status, sizeof(status), "exit code %d", res.exit_code);
	text = xasprintf("%s\n--- stdout ---\n%s\n--- stderr ---\n%s", status,
			 json_string_value(json_object_get(st, "stdout")),
			 json_string_value(json_object_get(st, "stderr")));
	json_t *r = tool_ok(st, text);
	free(text);
	lg_buf_free(&c.out);
	lg_buf_free(&c.err);
	return r;
}

/* ---- the tools ---- */

struct vm_args {
	uint64_t cpus, memory, disk, idle;
	const char *image;
};

static int parse_vm_args(const json_t *args, struct vm_args *v, char *why, size_t whylen)
{
	return arg_uint(args, "cpus", 1, HV_MAX_CPUS, 1, &v->cpus, why, whylen) < 0 ||
		       arg_uint(args, "memory", HV_MIN_MEMORY_MIB, 64 * 1024, LG_DEFAULT_MEMORY_MIB,
				&v->memory, why, whylen) < 0 ||
		       arg_uint(args, "disk", HV_MIN_LAYER_MIB, HV_MAX_LAYER_MIB,
				LG_DEFAULT_DISK_MIB, &v->disk, why, whylen) < 0 ||
		       arg_str(args, "image", false, &v->image, why, whylen) < 0
		   ? -1
		   : 0;
}

/*
 * Boots a sandbox; *net gets its egress when the server allows network
 * (NULL otherwise), which must outlive the sandbox: mcp_net_close() before
 * lg_sandbox_destroy(), mcp_net_free() after.
 */
static int boot(struct mcp_session *ss, const struct vm_args *v, struct lg_sandbox **out,
		struct mcp_net **net, char *why, size_t whylen)
{
	struct lg_sandbox_opts so = {
	    .image = v->image != NULL ? v->image : ss->srv->o.default_image,
	    .accel = ss->srv->o.accel,
	    .cpus = (unsigned)v->cpus,
	    .memory_mib = v->memory,
	    .disk_mib = v->disk,
	    .cancel_fd = -1,
	    .console_fd = -1,
	    .jail = ss->srv->o.jail,
	    .admission = ss->srv->admission,
	};
	struct lg_err *err = NULL;

	*net = NULL;
	if (ss->srv->o.net_allow != NULL) {
		*net = mcp_net_new(ss, ss->srv->o.net_allow, &err);
		if (*net == NULL)
			goto fail;
		so.egress = mcp_net_egress(*net);
	}
	if (lg_sandbox_create(&so, out, &err) < 0)
		goto fail;
	/* Every sandbox of this server is a cold boot today (no pool, no snapshot). */
	lg_metric_observe(mcp_metric(ss->srv->m.spawn_seconds, LG_SPAWN_PATH_BOOT),
			  (double)(*out)->boot_ms / 1000.0);
	return 0;
fail:
	snprintf(why, whylen, "%s", err->msg);
	lg_err_free(&err);
	mcp_net_free(*net);
	*net = NULL;
	return -1;
}

static json_t *t_create(struct mcp_session *ss, struct mcp_call *call, const json_t *args)
{
	char why[512];
	struct vm_args v;
	struct lg_sandbox *lsb;
	struct mcp_sandbox *sb;
	struct mcp_net *net;

	if (parse_vm_args(args, &v, why, sizeof(why)) < 0 ||
	    arg_uint(args, "timeout", 0, MAX_TIMEOUT_S, ss->srv->o.idle_timeout_s, &v.idle, why,
		     sizeof(why)) < 0)
		return tool_error("sandbox_create: %s", why);
	if (!mcp_sandbox_room(ss->srv))
		return tool_error("sandbox_create: the server's sandbox limit is reached; destroy "
				  "one first");
	if (boot(ss, &v, &lsb, &net, why, sizeof(why)) < 0)
		return tool_error("sandbox_create: %s", why);
	uint64_t boot_ms = lsb->boot_ms;
	sb = mcp_sandbox_add(ss, lsb, net, (unsigned)v.cpus, v.memory,
			     v.image != NULL		? v.image
			     : ss->srv->o.default_image ? ss->srv->o.default_image
							: "default",
			     (unsigned)v.idle);
	if (sb == NULL)
		return tool_error("sandbox_create: the server's sandbox limit is reached");
	return tool_ok(json_pack("{s:s, s:I, s:I, s:I, s:I}", "sandbox_id", sb->id, "cpus",
				 (json_int_t)v.cpus, "memory_mib", (json_int_t)v.memory,
				 "idle_timeout_s", (json_int_t)v.idle, "boot_ms",
				 (json_int_t)boot_ms),
		       NULL);
}

/* Looks up args.sandbox_id for this session, or sets *err_result. */
static struct mcp_sandbox *get_sandbox(struct mcp_session *ss, const json_t *args, const char *tool,
				       json_t **err_result)
{
	const char *id = json_string_value(json_object_get(args, "sandbox_id"));
	struct mcp_sandbox *sb;

	if (id == NULL) {
		*err_result = tool_error("%s: sandbox_id (string) is required", tool);
		return NULL;
	}
	sb = mcp_sandbox_get(ss, id);
	if (sb == NULL) {
		*err_result = tool_error(
		    "%s: no sandbox '%.40s' in this session (see sandbox_list)", tool, id);
		return NULL;
	}
	cleanup_free char *lost = mcp_sandbox_lost(ss->srv, sb);
	if (lost != NULL) {
		*err_result = tool_error("%s: sandbox %s is lost: %s; what it held is gone "
					 "(sandbox_destroy removes it from the list)",
					 tool, sb->id, lost);
		mcp_sandbox_put(ss->srv, sb);
		return NULL;
	}
	return sb;
}

static bool audit(struct mcp_session *ss, json_t *event);

/*
 * A sandbox whose guest ended without sandbox_destroy.  Its VM is torn
 * down (a hung guest would burn a CPU), but the sandbox is not removed:
 * if it vanished, a green command (`poweroff -f`, a kernel panic) could
 * do what only sandbox_destroy may, and a dirty sandbox's destroy needs a
 * human.  It stays listed as "lost", with the reason, until
 * sandbox_destroy; the loss is audited.  Caller holds sb.
 */
static void sandbox_lost(struct mcp_session *ss, struct mcp_sandbox *sb, const char *why)
{
	struct lg_sandbox *vm = mcp_sandbox_mark_lost(ss->srv, sb, why);
	bool dirty = false, lost;

	if (vm == NULL)
		return;
	lg_warn("session %s: sandbox %s is lost: %s", ss->id, sb->id, why);
	/* The VMM ended under a live sandbox: the guest powered off, crashed or QEMU died. */
	lg_metric_inc(mcp_metric(ss->srv->m.vmm_exits, "lost"));
	mcp_net_close(sb->net);
	lg_sandbox_destroy(vm);
	audit(ss, json_pack("{s:s, s:s, s:s, s:s, s:b}", "type", "sandbox_lost", "session", ss->id,
			    "sandbox_id", sb->id, "reason", why, "dirty",
			    mcp_sandbox_facts(ss, sb->id, &dirty, &lost) == 0 && dirty));
}

static json_t *t_exec(struct mcp_session *ss, struct mcp_call *call, const json_t *args)
{
	struct exec_args e;
	char why[512];
	json_t *r = NULL;
	struct mcp_sandbox *sb;
	bool broken = false;

	if (parse_exec_args(args, &e, why, sizeof(why)) < 0) {
		exec_args_free(&e);
		return tool_error("sandbox_exec: %s", why);
	}
	sb = get_sandbox(ss, args, "sandbox_exec", &r);
	if (sb != NULL) {
		mcp_sandbox_mark_dirty(ss->srv, sb);
		r = run_exec(ss->srv, sb->sb, &e, call->cancel_pipe[0], &broken);
		if (broken)
			sandbox_lost(
			    ss, sb,
			    "its guest stopped answering (it powered itself off, crashed or "
			    "hung)");
		mcp_sandbox_put(ss->srv, sb);
	}
	exec_args_free(&e);
	return r;
}

static json_t *t_run(struct mcp_session *ss, struct mcp_call *call, const json_t *args)
{
	struct exec_args e;
	struct vm_args v;
	char why[512];
	struct lg_sandbox *lsb;
	struct mcp_net *net;
	bool broken = false;
	json_t *r;

	if (parse_exec_args(args, &e, why, sizeof(why)) < 0 ||
	    parse_vm_args(args, &v, why, sizeof(why)) < 0) {
		exec_args_free(&e);
		return tool_error("sandbox_run: %s", why);
	}
	if (boot(ss, &v, &lsb, &net, why, sizeof(why)) < 0) {
		exec_args_free(&e);
		return tool_error("sandbox_run: %s", why);
	}
	if (net != NULL)
		mcp_net_set_sandbox(net, "(sandbox_run)");
	r = run_exec(ss->srv, lsb, &e, call->cancel_pipe[0], &broken);
	mcp_net_close(net);
	lg_sandbox_destroy(lsb);
	mcp_net_free(net);
	exec_args_free(&e);
	return r;
}

static json_t *t_fs_read(struct mcp_session *ss, struct mcp_call *call, const json_t *args)
{
	const char *path;
	char why[512];
	json_t *r = NULL;
	struct mcp_sandbox *sb;
	struct lg_err *err = NULL;
	uint8_t *data;
	size_t len;

	if (arg_str(args, "path", true, &path, why, sizeof(why)) < 0)
		return tool_error("sandbox_fs_read: %s", why);
	sb = get_sandbox(ss, args, "sandbox_fs_read", &r);
	if (sb == NULL)
		return r;
	if (lg_agent_read_file(sb->sb->agent, path, READ_CAP, &data, &len, &err) < 0) {
		r = tool_error("sandbox_fs_read: %s", err->msg);
		lg_err_free(&err);
	} else if (lg_utf8_valid(data, len)) {
		json_t *st =
		    json_pack("{s:s, s:s%, s:s, s:I}", "path", path, "content", (const char *)data,
			      len, "encoding", "utf-8", "size", (json_int_t)len);
		r = tool_ok(st, json_string_value(json_object_get(st, "content")));
		free(data);
	} else {
		cleanup_free char *b64 = lg_base64_encode(data, len);
		r = tool_ok(json_pack("{s:s, s:s, s:s, s:I}", "path", path, "content", b64,
				      "encoding", "base64", "size", (json_int_t)len),
			    NULL);
		free(data);
	}
	mcp_sandbox_put(ss->srv, sb);
	return r;
}

/* The bytes a sandbox_fs_write would write, decoded.  New buffer. */
static int write_payload(const json_t *args, uint8_t **out, size_t *len, char *why, size_t whylen)
{
	const char *content, *encoding;

	if (arg_str(args, "content", true, &content, why, whylen) < 0 ||
	    arg_str(args, "encoding", false, &encoding, why, whylen) < 0)
		return -1;
	if (encoding == NULL || strcmp(encoding, "utf-8") == 0) {
		*len = json_string_length(json_object_get(args, "content"));
		*out = xmalloc(*len + 1);
		memcpy(*out, content, *len);
		return 0;
	}
	if (strcmp(encoding, "base64") == 0) {
		if (lg_base64_decode(content, strlen(content), out, len) < 0) {
			snprintf(why, whylen, "content is not valid base64");
			return -1;
		}
		return 0;
	}
	snprintf(why, whylen, "encoding must be \"utf-8\" or \"base64\"");
	return -1;
}

static json_t *t_fs_write(struct mcp_session *ss, struct mcp_call *call, const json_t *args)
{
	const char *path;
	char why[512];
	json_t *r = NULL;
	struct mcp_sandbox *sb;
	struct lg_err *err = NULL;
	cleanup_free uint8_t *data = NULL;
	uint64_t mode;
	bool mkdirs;
	size_t len;

	if (arg_str(args, "path", true, &path, why, sizeof(why)) < 0 ||
	    arg_uint(args, "mode", 0, 07777, 0644, &mode, why, sizeof(why)) < 0 ||
	    arg_bool(args, "mkdirs", true, &mkdirs, why, sizeof(why)) < 0 ||
	    write_payload(args, &data, &len, why, sizeof(why)) < 0)
		return tool_error("sandbox_fs_write: %s", why);
	sb = get_sandbox(ss, args, "sandbox_fs_write", &r);
	if (sb == NULL)
		return r;
	mcp_sandbox_mark_dirty(ss->srv, sb);
	if (lg_agent_write_file(sb->sb->agent, path, data, len, (uint32_t)mode,
				mkdirs ? LG_WRITE_MKDIRS : 0, &err) < 0) {
		r = tool_error("sandbox_fs_write: %s", err->msg);
		lg_err_free(&err);
	} else {
		r = tool_ok(json_pack("{s:s, s:I}", "path", path, "bytes", (json_int_t)len), NULL);
	}
	mcp_sandbox_put(ss->srv, sb);
	return r;
}

static const char *ftype_name(uint32_t t)
{
	switch (t) {
	case LG_FTYPE_FILE:
		return "file";
	case LG_FTYPE_DIR:
		return "dir";
	case LG_FTYPE_SYMLINK:
		return "symlink";
	default:
		return "other";
	}
}

static json_t *t_fs_list(struct mcp_session *ss, struct mcp_call *call, const json_t *args)
{
	const char *path;
	char why[512];
	json_t *r = NULL;
	struct mcp_sandbox *sb;
	struct lg_err *err = NULL;
	struct lg_dirent *ents;
	size_t n;

	if (arg_str(args, "path", true, &path, why, sizeof(why)) < 0)
		return tool_error("sandbox_fs_list: %s", why);
	sb = get_sandbox(ss, args, "sandbox_fs_list", &r);
	if (sb == NULL)
		return r;
	if (lg_agent_list_dir(sb->sb->agent, path, &ents, &n, &err) < 0) {
		r = tool_error("sandbox_fs_list: %s", err->msg);
		lg_err_free(&err);
	} else {
		json_t *arr = json_array();
		for (size_t i = 0; i < n; i++) {
			size_t nl;
			cleanup_free char *name = lg_utf8_sanitize((const uint8_t *)ents[i].name,
								   strlen(ents[i].name), &nl);
			json_array_append_new(arr,
					      json_pack("{s:s%, s:s, s:I, s:I}", "name", name, nl,
							"type", ftype_name(ents[i].ftype), "size",
							(json_int_t)ents[i].size, "mode",
							(json_int_t)(ents[i].mode & 07777)));
		}
		lg_dirents_free(ents, n);
		r = tool_ok(json_pack("{s:s, s:o}", "path", path, "entries", arr), NULL);
	}
	mcp_sandbox_put(ss->srv, sb);
	return r;
}

static json_t *t_destroy(struct mcp_session *ss, struct mcp_call *call, const json_t *args)
{
	const char *id;
	char why[512];

	if (arg_str(args, "sandbox_id", true, &id, why, sizeof(why)) < 0)
		return tool_error("sandbox_destroy: %s", why);
	if (!mcp_sandbox_destroy(ss, id))
		return tool_error("sandbox_destroy: no sandbox '%.40s' in this session", id);
	return tool_ok(json_pack("{s:s}", "destroyed", id), NULL);
}

static json_t *t_list(struct mcp_session *ss, struct mcp_call *call, const json_t *args)
{
	return tool_ok(json_pack("{s:o}", "sandboxes", mcp_sandbox_list(ss)), NULL);
}

#define EXEC_PROPS                                                                                 \
	"\"command\": {\"type\": \"string\", \"description\": \"a shell command line, run "        \
	"with /bin/sh -c\"},"                                                                      \
	"\"argv\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}, \"description\": "     \
	"\"the program and its arguments, without a shell (instead of command)\"},"                \
	"\"stdin\": {\"type\": \"string\", \"description\": \"text given to the command on "       \
	"stdin\"},"                                                                                \
	"\"env\": {\"type\": \"object\", \"additionalProperties\": {\"type\": \"string\"}},"       \
	"\"cwd\": {\"type\": \"string\", \"description\": \"absolute working directory\"},"        \
	"\"user\": {\"type\": \"string\", \"description\": \"run as this user of the image "       \
	"(a name or a numeric uid; default: the image's default user, else root)\"},"              \
	"\"timeout\": {\"type\": \"integer\", \"minimum\": 0, \"description\": \"seconds; the "    \
	"command is killed after it (0: none)\"}"
#define VM_PROPS                                                                                   \
	"\"cpus\": {\"type\": \"integer\", \"minimum\": 1, \"maximum\": 64},"                      \
	"\"memory\": {\"type\": \"integer\", \"minimum\": 64, \"description\": \"MiB\"},"          \
	"\"image\": {\"type\": \"string\", \"description\": \"guest image name\"},"                \
	"\"disk\": {\"type\": \"integer\", \"minimum\": 16, \"description\": \"MiB of writable "   \
	"layer over a root file system image (default 256); gone with the sandbox\"}"
#define SANDBOX_ID "\"sandbox_id\": {\"type\": \"string\"}"

static const struct tool tools[] = {
    {"sandbox_create",
     "Boot a new throw-away micro-VM sandbox and return its sandbox_id. It belongs to this "
     "session and is destroyed when the session ends or after `timeout` idle seconds.",
     "{\"type\": \"object\", \"properties\": {" VM_PROPS
     ", \"timeout\": {\"type\": \"integer\", \"minimum\": 0, \"description\": \"idle seconds "
     "before the sandbox is reaped (0: never)\"}}}",
     "{\"title\": \"Create sandbox\", \"readOnlyHint\": false, \"destructiveHint\": false, "
     "\"idempotentHint\": false, \"openWorldHint\": false}",
     t_create},
    {"sandbox_exec",
     "Run a command in an existing sandbox and return its stdout, stderr and exit code "
     "(each output capped at 1 MiB).",
     "{\"type\": \"object\", \"properties\": {" SANDBOX_ID ", " EXEC_PROPS
     "}, \"required\": [\"sandbox_id\"]}",
     "{\"title\": \"Run in sandbox\", \"readOnlyHint\": false, \"destructiveHint\": true, "
     "\"idempotentHint\": false, \"openWorldHint\": false}",
     t_exec},
    {"sandbox_run",
     "One-shot: boot a fresh sandbox, run one command, return its output and exit code, "
     "destroy the sandbox.",
     "{\"type\": \"object\", \"properties\": {" EXEC_PROPS ", " VM_PROPS "}}",
     "{\"title\": \"Run in a fresh sandbox\", \"readOnlyHint\": false, \"destructiveHint\": "
     "false, \"idempotentHint\": false, \"openWorldHint\": false}",
     t_run},
    {"sandbox_fs_read",
     "Read a file from a sandbox (UTF-8 text, or base64 for binary; at most 1 MiB).",
     "{\"type\": \"object\", \"properties\": {" SANDBOX_ID
     ", \"path\": {\"type\": \"string\"}}, \"required\": [\"sandbox_id\", \"path\"]}",
     "{\"title\": \"Read file\", \"readOnlyHint\": true, \"destructiveHint\": false, "
     "\"idempotentHint\": true, \"openWorldHint\": false}",
     t_fs_read},
    {"sandbox_fs_write",
     "Write a file in a sandbox (replacing it), creating parent directories unless mkdirs is "
     "false.",
     "{\"type\": \"object\", \"properties\": {" SANDBOX_ID
     ", \"path\": {\"type\": \"string\"}, \"content\": {\"type\": \"string\"}, \"encoding\": "
     "{\"type\": \"string\", \"enum\": [\"utf-8\", \"base64\"]}, \"mode\": {\"type\": "
     "\"integer\", \"description\": \"permission bits, e.g. 420 for 0644\"}, \"mkdirs\": "
     "{\"type\": \"boolean\"}}, \"required\": [\"sandbox_id\", \"path\", \"content\"]}",
     "{\"title\": \"Write file\", \"readOnlyHint\": false, \"destructiveHint\": true, "
     "\"idempotentHint\": true, \"openWorldHint\": false}",
     t_fs_write},
    {"sandbox_fs_list", "List a directory in a sandbox.",
     "{\"type\": \"object\", \"properties\": {" SANDBOX_ID
     ", \"path\": {\"type\": \"string\"}}, \"required\": [\"sandbox_id\", \"path\"]}",
     "{\"title\": \"List directory\", \"readOnlyHint\": true, \"destructiveHint\": false, "
     "\"idempotentHint\": true, \"openWorldHint\": false}",
     t_fs_list},
    {"sandbox_destroy", "Destroy a sandbox and everything in it.",
     "{\"type\": \"object\", \"properties\": {" SANDBOX_ID "}, \"required\": [\"sandbox_id\"]}",
     "{\"title\": \"Destroy sandbox\", \"readOnlyHint\": false, \"destructiveHint\": true, "
     "\"idempotentHint\": true, \"openWorldHint\": false}",
     t_destroy},
    {"sandbox_list", "List this session's sandboxes.", "{\"type\": \"object\", \"properties\": {}}",
     "{\"title\": \"List sandboxes\", \"readOnlyHint\": true, \"destructiveHint\": false, "
     "\"idempotentHint\": true, \"openWorldHint\": false}",
     t_list},
};

static const struct tool *find_tool(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(tools); i++)
		if (strcmp(tools[i].name, name) == 0)
			return &tools[i];
	return NULL;
}

bool mcp_tool_exists(const char *name)
{
	return find_tool(name) != NULL;
}

json_t *mcp_tools_list(void)
{
	json_t *arr = json_array();

	for (size_t i = 0; i < ARRAY_SIZE(tools); i++) {
		json_t *schema = json_loads(tools[i].schema, 0, NULL);
		json_t *ann = json_loads(tools[i].annotations, 0, NULL);

		/* The tables are ours: a typo in them is a bug, caught by the tests. */
		if (schema == NULL || ann == NULL)
			abort();
		json_array_append_new(arr, json_pack("{s:s, s:s, s:o, s:o}", "name", tools[i].name,
						     "description", tools[i].description,
						     "inputSchema", schema, "annotations", ann));
	}
	return arr;
}

/* ---- the approval cliff ---- */

/*
 * What goes to the audit log of the arguments: the whole of them, so the
 * log says exactly what ran.  Up to AUDIT_ARGS_INLINE bytes of canonical
 * JSON they sit in the entry itself; larger ones (a 4 MiB file write) would
 * break the log's 1 MiB line limit, so the entry's "args" is then
 * "sha256:HEX", the hash of the canonical JSON (keys sorted, compact,
 * ASCII), and the text itself goes to a side file, LOG.blobs/HEX, written
 * and fsync'd before the entry (audit verify checks it).  NULL when the side
 * file cannot be written: the caller's audit() then fails and the action is
 * refused.
 */
#define AUDIT_ARGS_INLINE (64u << 10)

static json_t *audit_args(struct mcp_session *ss, const json_t *v)
{
	cleanup_free char *canon =
	    json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII | JSON_ENCODE_ANY);
	char ref[AUDIT_BLOB_REF_LEN + 1];
	struct lg_err *err = NULL;

	if (canon == NULL)
		return NULL;
	if (strlen(canon) <= AUDIT_ARGS_INLINE)
		return json_deep_copy(v);
	if (ss->srv->o.audit == NULL)
		return json_string("(not recorded: no audit log)");
	if (audit_put_blob(ss->srv->o.audit, canon, strlen(canon), ref, &err) < 0) {
		lg_error("audit log: %s", err->msg);
		lg_err_free(&err);
		return NULL;
	}
	return json_string(ref);
}

/*
 * Records an event (stolen).  Returns false if it could not be recorded:
 * the callers then refuse to act, because an action the log does not know
 * about is exactly what the log exists to prevent.
 */
static bool audit(struct mcp_session *ss, json_t *event)
{
	struct lg_err *err = NULL;
	bool ok = true;

	if (ss->srv->o.audit != NULL && audit_append(ss->srv->o.audit, event, &err) < 0) {
		lg_error("audit log: %s", err->msg);
		lg_err_free(&err);
		ok = false;
	}
	json_decref(event);
	return ok;
}

/*
 * A card must show everything the action depends on, or say plainly what
 * it left out.  It is bounded (it is shown on a screen, sent to the client
 * and written whole into the audit log, whose lines are at most 1 MiB), so
 * each string is cut at CARD_FIELD_CAP bytes and all of them together at
 * CARD_BUDGET; every cut is listed in the card's "omitted", with the full
 * size and SHA-256, and `luminaguard approvals show ID` gives the whole
 * action (the broker keeps it beside the card).
 */
#define CARD_FIELD_CAP 4096
#define CARD_BUDGET    (48u << 10)
#define CARD_MAX_ITEMS 256
#define CARD_MAX_DEPTH 8

#define CARD_KEY_CAP	 128
#define CARD_MAX_OMITTED 32

struct card_cut {
	json_t *omitted; /* array of strings */
	size_t budget;	 /* bytes of text still allowed */
	size_t unlisted; /* cuts past CARD_MAX_OMITTED, counted only */
};

static void card_omit(struct card_cut *cc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void card_omit(struct card_cut *cc, const char *fmt, ...)
{
	va_list ap;
	char *s;

	/* The list of cuts is bounded too: past it, they are only counted. */
	if (json_array_size(cc->omitted) >= CARD_MAX_OMITTED) {
		cc->unlisted++;
		return;
	}
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		abort();
	va_end(ap);
	json_array_append_new(cc->omitted, json_string(s));
	free(s);
}

/* p[0..n) for a card, cut (and the cut recorded) as the caps say.  `what` names it. */
static json_t *card_bytes(struct card_cut *cc, const char *what, const uint8_t *p, size_t n)
{
	size_t cap = CARD_FIELD_CAP < cc->budget ? CARD_FIELD_CAP : cc->budget;
	size_t keep = n < cap ? n : cap;
	size_t m;
	cleanup_free char *s = lg_utf8_sanitize(p, keep, &m);

	if (keep < n) {
		char hex[LG_SHA256_HEX_LEN + 1];

		lg_sha256_hex_of(p, n, hex);
		card_omit(cc, "%s: only the first %zu of %zu bytes are shown (sha256 %s)", what,
			  keep, n, hex);
	}
	cc->budget -= keep;
	return json_stringn(s, m);
}

static json_t *card_value(struct card_cut *cc, const char *what, const json_t *v, int depth)
{
	json_t *copy;
	size_t i = 0;

	if (json_is_string(v))
		return card_bytes(cc, what, (const uint8_t *)json_string_value(v),
				  json_string_length(v));
	if (!json_is_object(v) && !json_is_array(v))
		return json_deep_copy(v);
	if (depth >= CARD_MAX_DEPTH) {
		card_omit(cc, "%s: nested deeper than %d levels, not shown", what, CARD_MAX_DEPTH);
		return json_string("(not shown)");
	}
	if (json_is_object(v)) {
		const char *k;
		json_t *e;

		copy = json_object();
		json_object_foreach((json_t *)v, k, e)
		{
			size_t klen = strlen(k);
			cleanup_free char *shown_key = NULL;
			cleanup_free char *sub = NULL;

			if (i++ == CARD_MAX_ITEMS) {
				card_omit(cc, "%s: %zu more keys not shown", what,
					  json_object_size(v) - CARD_MAX_ITEMS);
				break;
			}
			/* Names count against the budget too: a key can be megabytes long. */
			if (klen > CARD_KEY_CAP || klen > cc->budget) {
				char hex[LG_SHA256_HEX_LEN + 1];

				lg_sha256_hex_of(k, klen, hex);
				shown_key =
				    xasprintf("(a name of %zu bytes, sha256 %.16s...)", klen, hex);
				card_omit(cc, "%s: a name of %zu bytes is not shown (sha256 %s)",
					  what, klen, hex);
			} else {
				shown_key = xstrdup(k);
				cc->budget -= klen;
			}
			sub = xasprintf("%s.%s", what, shown_key);
			json_object_set_new(copy, shown_key, card_value(cc, sub, e, depth + 1));
		}
		return copy;
	}
	copy = json_array();
	for (i = 0; i < json_array_size(v); i++) {
		cleanup_free char *sub = xasprintf("%s[%zu]", what, i);
		if (i == CARD_MAX_ITEMS) {
			card_omit(cc, "%s: %zu more items not shown", what,
				  json_array_size(v) - CARD_MAX_ITEMS);
			break;
		}
		json_array_append_new(copy, card_value(cc, sub, json_array_get(v, i), depth + 1));
	}
	return copy;
}

/*
 * One line for lists: the command, argv or path, its first
 * CARD_SUMMARY_CAP bytes and how much more there is (the card's "args"
 * holds the rest).
 */
#define CARD_SUMMARY_CAP 200

static json_t *card_summary(const char *tool, const json_t *args)
{
	const char *command = json_string_value(json_object_get(args, "command"));
	const char *path = json_string_value(json_object_get(args, "path"));
	cleanup_free char *argv = NULL;
	cleanup_free char *clean = NULL;
	cleanup_free char *line = NULL;
	const char *what;
	size_t len, keep, m;

	if (command != NULL)
		what = command;
	else if (json_is_array(json_object_get(args, "argv")))
		what = argv = json_dumps(json_object_get(args, "argv"), JSON_COMPACT);
	else if (path != NULL)
		what = path;
	else
		return json_string(tool);
	len = what != NULL ? strlen(what) : 0;
	keep = len < CARD_SUMMARY_CAP ? len : CARD_SUMMARY_CAP;
	clean = lg_utf8_sanitize((const uint8_t *)(what != NULL ? what : ""), keep, &m);
	if (command != NULL)
		line = xasprintf("run `%s%s", clean, keep < len ? "" : "`");
	else if (argv != NULL)
		line = xasprintf("run %s", clean);
	else
		line = xasprintf("%s %s", tool, clean);
	if (keep < len) {
		char *t = xasprintf("%s ... (%zu more bytes; the whole of it is in the card's "
				    "args)",
				    line, len - keep);
		free(line);
		line = t;
	}
	return json_string(line);
}

/*
 * The "diff card" a human decides on: who asked (session), what (tool,
 * summary, and every argument in "args": argv or command, env, cwd, stdin,
 * timeout, path, mode...), where, why it is red, and for a file write the
 * content before and after.  What did not fit is listed in "omitted".
 */
static json_t *make_card(struct mcp_session *ss, const char *tool, const json_t *args,
			 const struct policy_decision *d)
{
	const char *sid = json_string_value(json_object_get(args, "sandbox_id"));
	json_t *card =
	    json_pack("{s:s, s:s, s:s, s:s, s:s}", "tool", tool, "risk", policy_risk_name(d->risk),
		      "rule", d->rule, "reason", d->reason, "session", ss->id);
	const char *path = json_string_value(json_object_get(args, "path"));
	bool is_write = strcmp(tool, "sandbox_fs_write") == 0;
	struct card_cut cc = {.omitted = json_array(), .budget = CARD_BUDGET};
	json_t *shown_args;

	/* The sandbox id comes from the client, and can be as long as it likes. */
	json_object_set_new(
	    card, "where",
	    sid != NULL ? card_bytes(&cc, "where", (const uint8_t *)sid,
				     json_string_length(json_object_get(args, "sandbox_id")))
			: json_string("a new sandbox"));

	json_object_set_new(card, "summary", card_summary(tool, args));
	if (is_write && json_is_object(args)) {
		/* The content is shown decoded, as "after"; its raw form would only repeat it. */
		json_t *rest = json_deep_copy(args);
		json_object_del(rest, "content");
		shown_args = card_value(&cc, "args", rest, 0);
		json_decref(rest);
	} else {
		shown_args = card_value(&cc, "args", args, 0);
	}
	json_object_set_new(card, "args", shown_args);

	if (is_write && sid != NULL && path != NULL) {
		char why[256];
		uint8_t *after = NULL, *before = NULL;
		size_t alen = 0, blen = 0;
		struct mcp_sandbox *sb;

		if (write_payload(args, &after, &alen, why, sizeof(why)) == 0) {
			json_object_set_new(card, "after", card_bytes(&cc, "after", after, alen));
			json_object_set_new(card, "after_bytes", json_integer((json_int_t)alen));
		}
		free(after);
		sb = mcp_sandbox_get(ss, sid);
		if (sb != NULL) {
			/* sb->sb is NULL once lost; it only changes under op_lock, which we hold */
			if (sb->sb != NULL && lg_agent_read_file(sb->sb->agent, path, 1u << 20,
								 &before, &blen, NULL) == 0) {
				json_object_set_new(card, "before",
						    card_bytes(&cc, "before", before, blen));
				json_object_set_new(card, "before_bytes",
						    json_integer((json_int_t)blen));
				free(before);
			} else {
				json_object_set_new(card, "before", json_null());
			}
			mcp_sandbox_put(ss->srv, sb);
		}
	}
	if (cc.unlisted > 0)
		json_array_append_new(
		    cc.omitted, json_sprintf("... and %zu more cuts, not listed", cc.unlisted));
	if (json_array_size(cc.omitted) > 0)
		json_object_set_new(card, "omitted", cc.omitted);
	else
		json_decref(cc.omitted);
	return card;
}

/*
 * The client's user sees the same card as the terminal and `approvals
 * show`, rendered by the same code, control characters escaped (a client
 * may print it on a terminal).  It also says who may decide, and that the
 * answer given here is taken as the client's report.
 */
static json_t *elicitation_params(const json_t *card)
{
	cleanup_free char *body = approval_card_render(card);
	cleanup_free char *msg = xasprintf("LuminaGuard asks for approval %s.\n%s",
					   json_string_value(json_object_get(card, "approval")),
					   body != NULL ? body : "");

	return json_pack("{s:s, s:{s:s, s:{s:{s:s, s:s, s:s}, s:{s:s, s:s}}, s:[s]}}", "message",
			 msg, "requestedSchema", "type", "object", "properties", "approve", "type",
			 "boolean", "title", "Approve", "description", "Allow this action to run",
			 "reason", "type", "string", "description", "why (optional)", "required",
			 "approve");
}

/*
 * Returns true if the action may run.  Red actions wait for a human: the
 * request is filed with the broker (so `luminaguard approvals` sees it),
 * and the client is asked too when it can elicit; the first answer wins,
 * and the broker's timeout is a no.
 */
static bool cliff(struct mcp_session *ss, struct mcp_call *call, const char *tool,
		  const json_t *args, const struct policy_decision *d, char **denial)
{
	json_t *card;
	struct approval *a;
	enum approval_state st;
	char *decider = NULL, *reason = NULL;
	int64_t eid = -1;

	if (d->verdict == POLICY_GREEN)
		return true;
	card = make_card(ss, tool, args, d);
	{
		/* The whole action, for `approvals show`: the card may be cut, this is not. */
		json_t *action = json_pack("{s:s, s:O}", "tool", tool, "args", args);
		a = approval_file_full(ss->srv->o.broker, card, action);
		json_decref(action);
	}
	lg_info("session %s: %s needs approval %s (%s)", ss->id, tool, approval_id(a), d->reason);
	/* As the broker holds it: with its id and who may decide. */
	json_decref(card);
	card = approval_card(a);
	/*
	 * Tracked either way, so that a closing session can cancel the wait.
	 * The client is not asked when its answer would not count (--decide).
	 */
	eid = mcp_send_elicitation(ss, call,
				   mcp_session_elicits(ss) &&
					   (approval_channels(a) & APPROVAL_CH_ELICITATION)
				       ? elicitation_params(card)
				       : NULL,
				   a);
	json_decref(card);
	st = approval_wait(a, &decider, &reason);
	if (eid > 0)
		mcp_forget_elicitation(ss, call, eid);
	lg_metric_inc(mcp_metric(ss->srv->m.approvals, approval_state_name(st)));

	/* The broker has recorded the decision (and refuses a yes it cannot record). */
	if (st != APPROVAL_APPROVED)
		*denial = xasprintf("%s (approval %s) %s%s%s%s", tool, approval_id(a),
				    st == APPROVAL_TIMED_OUT   ? "was not approved in time"
				    : st == APPROVAL_CANCELLED ? "was cancelled"
							       : "was denied",
				    decider != NULL ? " by " : "", decider != NULL ? decider : "",
				    reason != NULL ? ": " : "");
	if (st != APPROVAL_APPROVED && reason != NULL) {
		char *t = xasprintf("%s%s", *denial, reason);
		free(*denial);
		*denial = t;
	}
	approval_put(a);
	free(decider);
	free(reason);
	return st == APPROVAL_APPROVED;
}

/*
 * Paths in the guest must be absolute.  A relative one would be resolved
 * by the agent against a working directory the policy cannot see, so
 * `etc/x` would pass a rule on `/etc/ **` and land in /etc/x: refusing it
 * before anything runs keeps what the classifier checked and what the
 * agent opens the same path.  ("cwd" too: a command's relative paths
 * start there.)  Returns NULL or the refusal.
 */
static char *relative_path_refusal(const char *tool, const json_t *args)
{
	static const char *const keys[] = {"path", "cwd"};

	for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
		const char *p = json_string_value(json_object_get(args, keys[i]));
		if (p != NULL && p[0] != '/') {
			size_t n;
			cleanup_free char *clean =
			    lg_utf8_sanitize((const uint8_t *)p, strnlen(p, 200), &n);
			return xasprintf("%s: %s must be an absolute path in the sandbox (starting "
					 "with /), not '%s'",
					 tool, keys[i], clean);
		}
	}
	return NULL;
}

static json_t *context_for(struct mcp_session *ss, const json_t *args)
{
	const char *sid = json_string_value(json_object_get(args, "sandbox_id"));
	json_t *ctx = json_object();

	bool dirty, lost;

	/* An unknown sandbox gets no fact: the policy then decides on what it knows. */
	if (sid != NULL && mcp_sandbox_facts(ss, sid, &dirty, &lost) == 0) {
		json_object_set_new(ctx, "sandbox_dirty", json_boolean(dirty));
		json_object_set_new(ctx, "sandbox_lost", json_boolean(lost));
	}
	return ctx;
}

json_t *mcp_tools_call(struct mcp_session *ss, struct mcp_call *call)
{
	const char *name = call->name;
	const json_t *args = call->args;
	const struct tool *t = find_tool(name);
	struct policy_decision d;
	json_t *ctx, *result;
	char *denial = NULL, *refusal;

	if (t == NULL)
		return tool_error("unknown tool %s", name);
	ctx = context_for(ss, args);
	policy_classify(ss->srv->o.policy, name, args, ctx, &d);
	if (!audit(ss, json_pack("{s:s, s:s, s:s, s:o, s:O, s:s, s:s, s:s, s:s}", "type", "request",
				 "session", ss->id, "tool", name, "args", audit_args(ss, args),
				 "context", ctx, "verdict", policy_verdict_name(d.verdict), "risk",
				 policy_risk_name(d.risk), "rule", d.rule, "reason", d.reason))) {
		json_decref(ctx);
		policy_decision_clear(&d);
		return tool_error("%s: the audit log cannot be written; refusing to act", name);
	}
	json_decref(ctx);

	refusal = relative_path_refusal(name, args);
	if (refusal != NULL || !cliff(ss, call, name, args, &d, &denial)) {
		result = refusal != NULL ? tool_error("%s", refusal)
					 : tool_error("%s; the action did not run", denial);
		audit(ss,
		      json_pack("{s:s, s:s, s:s, s:s}", "type", "outcome", "session", ss->id,
				"tool", name, "outcome",
				refusal != NULL ? "not run: relative path" : "not run: denied"));
		free(refusal);
		free(denial);
		policy_decision_clear(&d);
		return result;
	}
	policy_decision_clear(&d);

	result = t->run(ss, call, args);
	{
		json_t *st = json_object_get(result, "structuredContent");
		json_t *ev = json_pack(
		    "{s:s, s:s, s:s, s:s}", "type", "outcome", "session", ss->id, "tool", name,
		    "outcome", json_is_true(json_object_get(result, "isError")) ? "error" : "ok");
		if (json_object_get(st, "exit_code") != NULL)
			json_object_set(ev, "exit_code", json_object_get(st, "exit_code"));
		if (json_object_get(st, "sandbox_id") != NULL)
			json_object_set(ev, "sandbox_id", json_object_get(st, "sandbox_id"));
		if (json_is_true(json_object_get(result, "isError"))) {
			json_t *c0 = json_array_get(json_object_get(result, "content"), 0);
			json_object_set(ev, "error", json_object_get(c0, "text"));
		}
		audit(ss, ev);
	}
	return result;
}
