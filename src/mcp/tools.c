/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The sandbox tools, and the approval cliff in front of each of them:
 * every call is classified by the policy and recorded in the audit log; a
 * red call waits for a human (MCP elicitation, or `luminaguard approvals`
 * over the control socket) and runs only on an explicit yes.
 */
#include "mcp/tools.h"

#include "approval/gate.h"
#include "approval/gate_net.h"
#include "common/encoding.h"
#include "common/log.h"
#include "common/util.h"
#include "mcp/elicit.h"
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
	char **env; /* NULL: none */
	const char *cwd;
	const char *user;
	const char *stdin_text;
	uint32_t timeout_ms;
};

static void exec_args_free(struct exec_args *e)
{
	lg_strv_free(e->argv);
	lg_strv_free(e->env);
}

static int parse_exec_args(const json_t *args, struct exec_args *e, char *why, size_t whylen)
{
	const json_t *argv = json_object_get(args, "argv");
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
	/* A JSON null argv is not given, as every optional argument here. */
	return lg_gate_exec_command(json_is_null(argv) ? NULL : argv, command,
				    json_object_get(args, "env"), MAX_EXEC_ARGS, &e->argv, &e->env,
				    why, whylen);
}

static json_t *json_text(const struct lg_buf *b)
{
	size_t n;
	cleanup_free char *s =
	    lg_utf8_sanitize(b->data != NULL ? b->data : (const uint8_t *)"", b->len, &n);
	return json_stringn(s, n);
}

/* Runs e in the held entry; returns the tool result. */
static json_t *run_exec(struct mcp_server *srv, struct lg_entry *ent, const struct exec_args *e,
			const struct mcp_call *call)
{
	struct capture c = {0};
	struct lg_exec_opts o = {
	    .cancel_fd = call->cancel_pipe[0],
	    .request_id = call->rid,
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

	/* Timed into exec_seconds; a VM found gone marks the entry lost (on_lost audits it). */
	int ret = lg_entry_exec(srv->svc, ent, &o, &res, &err);

	if (ret < 0) {
		json_t *r = tool_error("exec failed: %s", err->msg);
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
 * What the MCP front end keeps with each of its sandboxes: the session
 * that owns it (valid while the entry is: a closing session destroys its
 * entries first) and, if the server allows network, the approval step of
 * its egress, which asks the session's client by an elicitation that
 * belongs to no tool call.
 */
struct mcp_front {
	struct mcp_session *ss;
	struct mcp_elicit elicit; /* the egress's asker's context */
	struct lg_gate_net *net;
};

static void front_close(void *p)
{
	struct mcp_front *f = p;

	/* A connection waiting for a human would hold the teardown up: end it. */
	lg_gate_net_close(f->net);
}

static void front_free(void *p)
{
	struct mcp_front *f = p;

	lg_gate_net_free(f->net);
	free(f);
}

static bool audit(struct mcp_session *ss, json_t *event);
static struct lg_gate session_gate(struct mcp_session *ss);

/*
 * A sandbox whose guest ended without sandbox_destroy (the service found
 * its VMM gone, or its agent stopped answering).  Its VM is torn down (a
 * hung guest would burn a CPU), but the sandbox is not removed: if it
 * vanished, a green command (`poweroff -f`, a kernel panic) could do what
 * only sandbox_destroy may, and a dirty sandbox's destroy needs a human.
 * It stays listed as "lost", with the reason, until sandbox_destroy; the
 * loss is audited here.
 */
static void front_lost(void *p, const char *id, const char *why)
{
	struct mcp_front *f = p;
	bool dirty = false, lost;

	lg_warn("session %s: sandbox %s is lost: %s", f->ss->id, id, why);
	lg_gate_net_close(f->net);
	audit(f->ss, json_pack("{s:s, s:s, s:s, s:s, s:b}", "type", "sandbox_lost", "session",
			       f->ss->id, "sandbox_id", id, "reason", why, "dirty",
			       mcp_sandbox_facts(f->ss, id, &dirty, &lost) == 0 && dirty));
}

/* Creates a sandbox of session ss in the service (a pooled one when it matches); held. */
static int create(struct mcp_session *ss, const struct mcp_call *call, const struct vm_args *v,
		  struct lg_entry **out, char *why, size_t whylen)
{
	struct mcp_front *f = xzalloc(sizeof(*f));
	struct lg_err *err = NULL;
	struct lg_sandbox_net net;
	struct lg_create_req req = {
	    .image = v->image,
	    .cpus = (unsigned)v->cpus,
	    .memory_mib = v->memory,
	    .disk_mib = v->disk,
	    .owner = ss,
	    .owner_name = "mcp",
	    .request_id = call->rid,
	    .idle_timeout_s = v->idle == 0 ? LG_IDLE_NEVER : (unsigned)v->idle,
	    .front = f,
	    .on_close = front_close,
	    .on_free = front_free,
	    .on_lost = front_lost,
	    .cancel_fd = -1,
	};

	f->ss = ss;
	if (ss->srv->o.net_allow != NULL) {
		struct lg_gate g = session_gate(ss);
		struct lg_asker asker;

		f->elicit = (struct mcp_elicit){.ss = ss, .call = NULL};
		asker = mcp_elicit_asker(&f->elicit);
		f->net = lg_gate_net_new(&(struct lg_gate_net_opts){
		    .gate = &g,
		    .who = ss->id,
		    .askers = &asker,
		    .n_askers = 1,
		    .connections = ss->srv->m.egress_connections,
		});
		/* Each sandbox its own copy of the allowlist: a yes widens only its own. */
		net = (struct lg_sandbox_net){
		    .allow = ss->srv->o.net_allow,
		    .ask = lg_gate_net_ask,
		    .log = lg_gate_net_log,
		    .ctx = f->net,
		};
		req.net = &net;
	}
	/* On failure the service has run front_close and front_free (a bad allowlist too). */
	if (lg_service_create(ss->srv->svc, &req, out, &err) < 0) {
		snprintf(why, whylen, "%s", err->msg);
		lg_err_free(&err);
		return -1;
	}
	if (f->net != NULL)
		lg_gate_net_set_sandbox(f->net, lg_entry_id(*out));
	return 0;
}

static json_t *t_create(struct mcp_session *ss, struct mcp_call *call, const json_t *args)
{
	char why[512];
	struct vm_args v;
	struct lg_entry *e;
	json_t *r;

	if (parse_vm_args(args, &v, why, sizeof(why)) < 0 ||
	    arg_uint(args, "timeout", 0, MAX_TIMEOUT_S, ss->srv->o.idle_timeout_s, &v.idle, why,
		     sizeof(why)) < 0)
		return tool_error("sandbox_create: %s", why);
	if (create(ss, call, &v, &e, why, sizeof(why)) < 0)
		return tool_error("sandbox_create: %s", why);
	r = tool_ok(json_pack("{s:s, s:I, s:I, s:I, s:I, s:s}", "sandbox_id", lg_entry_id(e),
			      "cpus", (json_int_t)v.cpus, "memory_mib", (json_int_t)v.memory,
			      "idle_timeout_s", (json_int_t)v.idle, "boot_ms",
			      (json_int_t)lg_entry_spawn_ms(e), "spawn_path",
			      lg_spawn_path_name(lg_entry_path(e))),
		    NULL);
	mcp_sandbox_put(ss->srv, e);
	return r;
}

/* Looks up args.sandbox_id for this session, or sets *err_result. */
static struct lg_entry *get_sandbox(struct mcp_session *ss, const json_t *args, const char *tool,
				    json_t **err_result, struct lg_sandbox **vm)
{
	const char *id = json_string_value(json_object_get(args, "sandbox_id"));
	struct lg_entry *sb;

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
	/*
	 * Read once: the watcher may mark it lost at any moment, but the VM
	 * itself is only freed once nobody holds the entry.
	 */
	*vm = lg_entry_sandbox(sb);
	if (*vm == NULL) {
		cleanup_free char *lost = lg_entry_lost(ss->srv->svc, sb);
		*err_result =
		    tool_error("%s: sandbox %s is lost: %s; what it held is gone "
			       "(sandbox_destroy removes it from the list)",
			       tool, lg_entry_id(sb), lost != NULL ? lost : "its VM is gone");
		mcp_sandbox_put(ss->srv, sb);
		return NULL;
	}
	return sb;
}

static json_t *t_exec(struct mcp_session *ss, struct mcp_call *call, const json_t *args)
{
	struct exec_args e;
	char why[512];
	json_t *r = NULL;
	struct lg_entry *sb;
	struct lg_sandbox *vm;

	if (parse_exec_args(args, &e, why, sizeof(why)) < 0) {
		exec_args_free(&e);
		return tool_error("sandbox_exec: %s", why);
	}
	sb = get_sandbox(ss, args, "sandbox_exec", &r, &vm);
	if (sb != NULL) {
		r = run_exec(ss->srv, sb, &e, call);
		mcp_sandbox_put(ss->srv, sb);
	}
	exec_args_free(&e);
	return r;
}

/* One command in a sandbox of its own, destroyed after: a pooled one when it matches. */
static json_t *t_run(struct mcp_session *ss, struct mcp_call *call, const json_t *args)
{
	struct exec_args e;
	struct vm_args v;
	char why[512];
	struct lg_entry *sb;
	char id[32];
	json_t *r;

	if (parse_exec_args(args, &e, why, sizeof(why)) < 0 ||
	    parse_vm_args(args, &v, why, sizeof(why)) < 0) {
		exec_args_free(&e);
		return tool_error("sandbox_run: %s", why);
	}
	v.idle = 0;
	if (create(ss, call, &v, &sb, why, sizeof(why)) < 0) {
		exec_args_free(&e);
		return tool_error("sandbox_run: %s", why);
	}
	snprintf(id, sizeof(id), "%s", lg_entry_id(sb));
	r = run_exec(ss->srv, sb, &e, call);
	mcp_sandbox_put(ss->srv, sb);
	mcp_sandbox_destroy(ss, id);
	exec_args_free(&e);
	return r;
}

static json_t *t_fs_read(struct mcp_session *ss, struct mcp_call *call, const json_t *args)
{
	const char *path;
	char why[512];
	json_t *r = NULL;
	struct lg_entry *sb;
	struct lg_sandbox *vm;
	struct lg_err *err = NULL;
	uint8_t *data;
	size_t len;

	if (arg_str(args, "path", true, &path, why, sizeof(why)) < 0)
		return tool_error("sandbox_fs_read: %s", why);
	sb = get_sandbox(ss, args, "sandbox_fs_read", &r, &vm);
	if (sb == NULL)
		return r;
	if (lg_agent_read_file(lg_sandbox_agent(vm), path, READ_CAP, &data, &len, &err) < 0) {
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

static json_t *t_fs_write(struct mcp_session *ss, struct mcp_call *call, const json_t *args)
{
	const char *path;
	char why[512];
	json_t *r = NULL;
	struct lg_entry *sb;
	struct lg_sandbox *vm;
	struct lg_err *err = NULL;
	cleanup_free uint8_t *data = NULL;
	uint64_t mode;
	bool mkdirs;
	size_t len;

	if (arg_str(args, "path", true, &path, why, sizeof(why)) < 0 ||
	    arg_uint(args, "mode", 0, 07777, 0644, &mode, why, sizeof(why)) < 0 ||
	    arg_bool(args, "mkdirs", true, &mkdirs, why, sizeof(why)) < 0 ||
	    lg_gate_write_payload(args, &data, &len, why, sizeof(why)) < 0)
		return tool_error("sandbox_fs_write: %s", why);
	sb = get_sandbox(ss, args, "sandbox_fs_write", &r, &vm);
	if (sb == NULL)
		return r;
	lg_entry_mark_dirty(ss->srv->svc, sb);
	if (lg_agent_write_file(lg_sandbox_agent(vm), path, data, len, (uint32_t)mode,
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
	struct lg_entry *sb;
	struct lg_sandbox *vm;
	struct lg_err *err = NULL;
	struct lg_dirent *ents;
	size_t n;

	if (arg_str(args, "path", true, &path, why, sizeof(why)) < 0)
		return tool_error("sandbox_fs_list: %s", why);
	sb = get_sandbox(ss, args, "sandbox_fs_list", &r, &vm);
	if (sb == NULL)
		return r;
	if (lg_agent_list_dir(lg_sandbox_agent(vm), path, &ents, &n, &err) < 0) {
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

/* ---- the approval cliff: lg_gate, with MCP elicitation as an asker ---- */

static struct lg_gate session_gate(struct mcp_session *ss)
{
	return (struct lg_gate){
	    .policy = ss->srv->o.policy,
	    .audit = ss->srv->o.audit,
	    .broker = ss->srv->o.broker,
	    .approvals = ss->srv->m.approvals,
	};
}

/* Records an event (stolen); false if the log cannot be written. */
static bool audit(struct mcp_session *ss, json_t *event)
{
	struct lg_gate g = session_gate(ss);

	return lg_gate_audit(&g, event);
}

/* The "before" of a file write, read from the session's sandbox. */
static int read_before(void *ctx, const char *path, uint8_t **out, size_t *len)
{
	struct mcp_elicit *e = ctx;
	const char *sid = json_string_value(json_object_get(e->call->args, "sandbox_id"));
	struct lg_entry *sb = sid != NULL ? mcp_sandbox_get(e->ss, sid) : NULL;
	struct lg_sandbox *vm;
	int r = -1;

	if (sb == NULL)
		return -2;
	/* NULL once lost; the VM itself is not freed while we hold the entry */
	vm = lg_entry_sandbox(sb);
	if (vm != NULL &&
	    lg_agent_read_file(lg_sandbox_agent(vm), path, 1u << 20, out, len, NULL) == 0)
		r = 0;
	mcp_sandbox_put(e->ss->srv, sb);
	return r;
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
	struct lg_gate g = session_gate(ss);
	struct mcp_elicit ea = {.ss = ss, .call = call};
	struct lg_asker asker = mcp_elicit_asker(&ea);
	struct lg_gate_req req = {
	    .who = ss->id,
	    .tool = name,
	    .args = args,
	    .request_id = call->rid,
	    .askers = &asker,
	    .n_askers = 1,
	    .read_before = read_before,
	    .read_ctx = &ea,
	};
	json_t *result, *fields;
	char *denial = NULL;
	bool may_run;

	if (t == NULL)
		return tool_error("unknown tool %s", name);
	req.context = context_for(ss, args);
	may_run = lg_gate_enter(&g, &req, &denial);
	json_decref((json_t *)req.context);
	req.context = NULL;
	if (!may_run) {
		result = tool_error("%s", denial);
		free(denial);
		return result;
	}

	result = t->run(ss, call, args);
	{
		json_t *st = json_object_get(result, "structuredContent");
		bool failed = json_is_true(json_object_get(result, "isError"));

		fields = json_object();
		if (json_object_get(st, "exit_code") != NULL)
			json_object_set(fields, "exit_code", json_object_get(st, "exit_code"));
		if (json_object_get(st, "sandbox_id") != NULL)
			json_object_set(fields, "sandbox_id", json_object_get(st, "sandbox_id"));
		if (failed) {
			json_t *c0 = json_array_get(json_object_get(result, "content"), 0);
			json_object_set(fields, "error", json_object_get(c0, "text"));
		}
		lg_gate_outcome(&g, &req, failed ? "error" : "ok", fields);
	}
	return result;
}
