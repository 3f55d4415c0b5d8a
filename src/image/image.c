/* SPDX-License-Identifier: Apache-2.0 */
#include "image/image.h"

#include "common/env.h"
#include "common/err.h"
#include "common/log.h"
#include "common/paths.h"
#include "common/sha256.h"
#include "common/util.h"
#include "image/cpio.h"
#include "image/kmod.h"
#include "image/rootfs.h"
#include "image/spec.h"
#include "image/vmlinux.h"
#include "lg-config.h"

#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KERNEL_FILE   "vmlinux"
#define INITRD_FILE   "initramfs.cpio"
#define MANIFEST_FILE "manifest.json"
#define ROOTFS_FILE   "rootfs.erofs"
#define STAMP_FILE    ".verified"
/* Inside the temporary build directory only. */
#define ROOTFS_TAR  "rootfs.tar"
#define ROOTFS_WORK "rootfs.work"
/* The erofs superblock sits at byte 1024 and starts with this magic, little-endian. */
#define EROFS_SB_OFFSET 1024
#define EROFS_MAGIC	"\xe2\xe1\xf5\xe0"
#define STAMP_MAX	512
#define REBUILD_MAX	4096
#define MODULE_LIST	"/etc/lg-modules"
/* busybox --list prints ~400 short names. */
#define APPLET_LIST_MAX (256u << 10)
#define MANIFEST_MAX	(1u << 20)

/* What the guest agent needs: the console port for its channel to the host. */
static const char *const required_modules[] = {
    "virtio_ring", "virtio", "virtio_mmio", "virtio_console", NULL,
};
/* Entropy and disks: nice to have, skipped when the kernel lacks them. */
static const char *const optional_modules[] = {"virtio_rng", "virtio_blk", NULL};
/*
 * What the agent needs to mount rootfs.erofs under an overlay.  erofs
 * pulls in libcrc32c through its depends= where it is a module; kernels
 * that build it in (or that dropped it for the crc32c library) have none,
 * so it is optional here rather than a build failure.
 */
static const char *const rootfs_modules[] = {"virtio_blk", "erofs", "overlay", NULL};
static const char *const rootfs_optional_modules[] = {"virtio_rng", "libcrc32c", NULL};

/* Used when `busybox --list` cannot be run; every busybox build has these. */
static const char *const fallback_applets[] = {
    "[",    "ash",    "awk",	  "basename", "cat",   "chmod", "chown",    "cp",	"cut",
    "date", "dd",     "df",	  "dirname",  "dmesg", "du",	"echo",	    "env",	"false",
    "find", "free",   "grep",	  "gunzip",   "gzip",  "head",	"hostname", "id",	"ip",
    "kill", "ln",     "ls",	  "mkdir",    "mknod", "mount", "mv",	    "poweroff", "printf",
    "ps",   "pwd",    "readlink", "reboot",   "rm",    "rmdir", "sed",	    "sh",	"sleep",
    "sort", "stat",   "sync",	  "tail",     "tar",   "tee",	"test",	    "touch",	"tr",
    "true", "umount", "uname",	  "uniq",     "vi",    "wc",	"which",    "xargs",	NULL,
};

/* ---- names and messages ---- */

/*
 * Sets *err to a complete sentence for the user, keeping errnum for callers
 * (e.g. ENOENT for a missing image) without appending strerror() to it.
 */
static int fail(struct lg_err **err, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct lg_err **err, int errnum, const char *fmt, ...)
{
	cleanup_free char *msg = NULL;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	lg_err_msg(err, errnum, "%s", msg ? msg : "out of memory");
	return -errnum;
}

bool lg_image_name_valid(const char *name)
{
	size_t n = 0;

	if (name == NULL || name[0] == '.')
		return false;
	for (const char *p = name; *p; p++, n++) {
		char ch = *p;
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-'))
			return false;
	}
	return n >= 1 && n <= LG_IMAGE_NAME_MAX;
}

static int invalid_name(const char *name, struct lg_err **err)
{
	return lg_err_set(
	    err, EINVAL,
	    "invalid image name `%.80s`: use 1 to %d letters, digits, '.', '_' or '-', "
	    "not starting with '.'",
	    name ? name : "(null)", LG_IMAGE_NAME_MAX);
}

/*
 * The command that builds image name when no manifest says how it was
 * built (not found, manifest unreadable).  The default image is the Debian
 * one with python3 that scripts/setup.sh builds.  New string.
 */
static char *build_hint(const char *name)
{
	if (strcmp(name, LG_IMAGE_DEFAULT_NAME) == 0)
		return xstrdup("luminaguard image build --packages python3");
	return xasprintf("luminaguard image build --name %s", name);
}

/* How a format-1 image (always the initramfs kind) is rebuilt.  New string. */
static char *initramfs_hint(const char *name)
{
	if (strcmp(name, LG_IMAGE_DEFAULT_NAME) == 0)
		return xstrdup("luminaguard image build");
	return xasprintf("luminaguard image build --name %s", name);
}

/* One line: what is wrong with the image and the command that fixes it. */
static int damaged(struct lg_err **err, const char *name, const char *hint, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int damaged(struct lg_err **err, const char *name, const char *hint, const char *fmt, ...)
{
	cleanup_free char *why = NULL;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&why, fmt, ap) < 0)
		why = NULL;
	va_end(ap);
	return fail(err, EINVAL, "image '%s' is damaged: %s; rebuild it with: %s", name,
		    why ? why : "?", hint);
}

static void progress(const struct lg_image_build_opts *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void progress(const struct lg_image_build_opts *o, const char *fmt, ...)
{
	cleanup_free char *msg = NULL;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	if (msg == NULL)
		return;
	if (o->progress != NULL)
		o->progress(o->progress_data, msg);
	else
		lg_info("%s", msg);
}

/* ---- ELF executables for the initramfs ---- */

/*
 * The initramfs has no libc and no dynamic loader, so every program in it
 * must be a static x86-64 executable: no PT_INTERP.
 */
static int check_static_exec(const char *path, const char *what, const char *fix,
			     struct lg_err **err)
{
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	Elf64_Ehdr eh;
	struct stat st;

	if (fd < 0)
		return lg_err_sys(err, "open %s `%s`", what, path);
	if (fstat(fd, &st) < 0)
		return lg_err_sys(err, "stat %s `%s`", what, path);
	if (!S_ISREG(st.st_mode))
		return fail(err, EINVAL, "%s `%s` is not a regular file", what, path);
	if (lg_pread_exact(fd, &eh, sizeof(eh), 0, (uint64_t)st.st_size) < 0 ||
	    memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0)
		return fail(err, EINVAL, "%s `%s` is not an ELF executable", what, path);
	if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB ||
	    eh.e_machine != EM_X86_64 || (eh.e_type != ET_EXEC && eh.e_type != ET_DYN))
		return fail(err, EINVAL, "%s `%s` is not an x86-64 executable", what, path);
	if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 || eh.e_phnum == PN_XNUM)
		return fail(err, EINVAL, "%s `%s` has no usable program headers", what, path);
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;

		if (lg_pread_exact(fd, &ph, sizeof(ph), eh.e_phoff + (uint64_t)i * sizeof(ph),
				   (uint64_t)st.st_size) < 0)
			return fail(err, EINVAL, "%s `%s` has truncated program headers", what,
				    path);
		if (ph.p_type == PT_INTERP)
			return fail(err, EINVAL,
				    "%s `%s` is dynamically linked, but the initramfs has no "
				    "libc; %s",
				    what, path, fix);
	}
	return 0;
}

/* ---- busybox applets ---- */

static bool applet_name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 64 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0 ||
	    strcmp(s, "busybox") == 0)
		return false;
	for (const char *p = s; *p; p++)
		if (*p == '/' || *p <= ' ' || *p > '~')
			return false;
	return true;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs `busybox --list`.  Returns the number of applets (sorted, unique) or negative. */
static int busybox_applets(const char *busybox, char ***out)
{
	posix_spawn_file_actions_t fa;
	cleanup_free char *buf = NULL;
	char *argv[] = {(char *)busybox, (char *)"--list", NULL};
	char *envp[] = {NULL};
	int pipefd[2];
	size_t used = 0;
	pid_t pid;
	int status, rc;
	char **v = NULL;
	size_t n = 0;

	*out = NULL;
	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return -errno;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDOUT_FILENO);
	posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
	rc = posix_spawn(&pid, busybox, &fa, NULL, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	close(pipefd[1]);
	if (rc != 0) {
		close(pipefd[0]);
		return -rc;
	}
	buf = xmalloc(APPLET_LIST_MAX + 1);
	for (;;) {
		ssize_t r = read(pipefd[0], buf + used, APPLET_LIST_MAX - used);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		used += (size_t)r;
		if (used == APPLET_LIST_MAX)
			break;
	}
	close(pipefd[0]);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return -EIO;
	buf[used] = '\0';
	for (char *save = NULL, *tok = strtok_r(buf, "\n", &save); tok != NULL;
	     tok = strtok_r(NULL, "\n", &save)) {
		if (!applet_name_ok(tok))
			continue;
		v = xrealloc(v, (n + 2) * sizeof(*v));
		v[n++] = xstrdup(tok);
		v[n] = NULL;
	}
	if (n == 0) {
		free(v);
		return -ENOENT;
	}
	qsort(v, n, sizeof(*v), cmp_str);
	*out = v;
	return (int)n;
}

/* ---- finding the kernel ---- */

static bool version_ok(const char *v)
{
	size_t n = strlen(v);

	if (n == 0 || n > 128 || v[0] == '.')
		return false;
	for (const char *p = v; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || strchr("._+-~", *p) != NULL))
			return false;
	return true;
}

static bool is_dir(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool is_file(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* ROOT/lib/modules/VER, or ROOT/usr/lib/modules/VER on a merged /usr.  New string or NULL. */
static char *modules_dir(const char *root, const char *ver)
{
	const char *sep = strcmp(root, "/") == 0 ? "" : "/";
	char *d = xasprintf("%s%slib/modules/%s", root, sep, ver);

	if (is_dir(d))
		return d;
	free(d);
	d = xasprintf("%s%susr/lib/modules/%s", root, sep, ver);
	if (is_dir(d))
		return d;
	free(d);
	return NULL;
}

struct kernel_src {
	char *root;
	char *version;
	char *vmlinuz;
	char *moddir;
};

static void kernel_src_clear(struct kernel_src *k)
{
	free(k->root);
	free(k->version);
	free(k->vmlinuz);
	free(k->moddir);
	memset(k, 0, sizeof(*k));
}

/* Newest version first. */
static int cmp_version_desc(const void *a, const void *b)
{
	return strverscmp(*(char *const *)b, *(char *const *)a);
}

/*
 * Picks a kernel in root: ROOT/boot/vmlinuz-VER with modules for VER.
 * want: that version only.  Returns 0, or -ENOENT (no error set) when root
 * has none.
 */
static int pick_kernel(const char *root, const char *want, struct kernel_src *out)
{
	const char *sep = strcmp(root, "/") == 0 ? "" : "/";
	cleanup_free char *boot = xasprintf("%s%sboot", root, sep);
	char **vers = NULL;
	size_t n = 0;
	DIR *d = opendir(boot);
	struct dirent *de;
	int ret = -ENOENT;

	if (d == NULL)
		return -ENOENT;
	while ((de = readdir(d)) != NULL) {
		const char *ver;

		if (strncmp(de->d_name, "vmlinuz-", 8) != 0)
			continue;
		ver = de->d_name + 8;
		if (!version_ok(ver) || (want != NULL && strcmp(ver, want) != 0))
			continue;
		vers = xrealloc(vers, (n + 1) * sizeof(*vers));
		vers[n++] = xstrdup(ver);
	}
	closedir(d);
	if (n > 0)
		qsort(vers, n, sizeof(*vers), cmp_version_desc);
	for (size_t i = 0; i < n && ret < 0; i++) {
		cleanup_free char *vmlinuz = xasprintf("%s/vmlinuz-%s", boot, vers[i]);
		char *moddir;

		if (!is_file(vmlinuz) || (moddir = modules_dir(root, vers[i])) == NULL)
			continue;
		out->root = xstrdup(root);
		out->version = xstrdup(vers[i]);
		out->vmlinuz = steal_pointer(&vmlinuz);
		out->moddir = moddir;
		ret = 0;
	}
	for (size_t i = 0; i < n; i++)
		free(vers[i]);
	free(vers);
	return ret;
}

static int find_kernel(const struct lg_image_build_opts *o, struct kernel_src *out,
		       struct lg_err **err)
{
	cleanup_free char *kdir = NULL;
	const char *want = o->kernel_version;
	char **roots = NULL;
	size_t n = 0;
	DIR *d;
	int ret = -ENOENT;

	if (want != NULL && !version_ok(want))
		return fail(err, EINVAL, "invalid kernel version `%.80s`", want);
	if (o->kernel_dir != NULL) {
		if (!is_dir(o->kernel_dir))
			return fail(err, ENOENT, "kernel directory `%s` does not exist",
				    o->kernel_dir);
		if (pick_kernel(o->kernel_dir, want, out) == 0)
			return 0;
		return fail(err, ENOENT,
			    "no kernel%s%s in `%s` (looked for boot/vmlinuz-VERSION with "
			    "lib/modules/VERSION next to it)",
			    want ? " " : "", want ? want : "", o->kernel_dir);
	}

	/* Kernels fetched by scripts/fetch-kernel.sh, newest first, then the host's. */
	kdir = lg_kernels_dir();
	d = opendir(kdir);
	if (d != NULL) {
		struct dirent *de;
		while ((de = readdir(d)) != NULL) {
			if (de->d_name[0] == '.')
				continue;
			roots = xrealloc(roots, (n + 1) * sizeof(*roots));
			roots[n++] = xstrdup(de->d_name);
		}
		closedir(d);
	}
	if (n > 0)
		qsort(roots, n, sizeof(*roots), cmp_version_desc);
	for (size_t i = 0; i < n && ret < 0; i++) {
		cleanup_free char *root = xasprintf("%s/%s", kdir, roots[i]);
		ret = pick_kernel(root, want, out);
	}
	for (size_t i = 0; i < n; i++)
		free(roots[i]);
	free(roots);
	if (ret == 0)
		return 0;
	if (pick_kernel("/", want, out) == 0)
		return 0;
	return fail(err, ENOENT,
		    "no kernel%s%s found in `%s` or /boot; fetch one with "
		    "scripts/fetch-kernel.sh, or pass --kernel-dir",
		    want ? " " : "", want ? want : "", kdir);
}

/* ---- the initramfs ---- */

static const struct {
	const char *path;
	mode_t mode;
} initramfs_dirs[] = {
    {"/bin", 0755},  {"/dev", 0755},  {"/etc", 0755},	  {"/lib", 0755},      {"/mnt", 0755},
    {"/proc", 0555}, {"/root", 0700}, {"/run", 0755},	  {"/sbin", 0755},     {"/sys", 0555},
    {"/tmp", 01777}, {"/usr", 0755},  {"/usr/bin", 0755}, {"/usr/sbin", 0755},
};

static const struct {
	const char *path;
	const char *text;
} initramfs_etc[] = {
    {"/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"},
    {"/etc/group", "root:x:0:\n"},
    {"/etc/hostname", "luminaguard\n"},
    {"/etc/hosts", "127.0.0.1\tlocalhost luminaguard\n::1\tlocalhost\n"},
};

static int write_initramfs(const struct lg_image_build_opts *o, int fd, const char *agent,
			   const char *busybox, const struct kernel_src *k,
			   const struct lg_kmod *mods, size_t nmods, struct lg_err **err)
{
	struct lg_cpio *c = lg_cpio_new(fd);
	char **applets = NULL;
	size_t list_len = 0;
	cleanup_free char *list = xstrdup("");
	int napplets;
	int r = 0;

	for (size_t i = 0; r == 0 && i < ARRAY_SIZE(initramfs_dirs); i++)
		r = lg_cpio_add_dir(c, initramfs_dirs[i].path, initramfs_dirs[i].mode, err);
	/* PID 1 gets /dev/console as stdio before anything can mount devtmpfs. */
	if (r == 0)
		r = lg_cpio_add_chardev(c, "/dev/console", 0600, 5, 1, err);
	if (r == 0)
		r = lg_cpio_add_chardev(c, "/dev/null", 0666, 1, 3, err);
	if (r == 0)
		r = lg_cpio_add_file(c, "/init", 0755, agent, err);
	if (r == 0)
		r = lg_cpio_add_file(c, "/bin/busybox", 0755, busybox, err);

	napplets = r == 0 ? busybox_applets(busybox, &applets) : 0;
	if (napplets < 0) {
		progress(o, "could not run `%s --list` (%s); linking a fixed list of applets",
			 busybox, strerror(-napplets));
		applets = NULL;
	}
	for (size_t i = 0; r == 0; i++) {
		const char *a = applets ? applets[i] : fallback_applets[i];
		cleanup_free char *p = NULL;

		if (a == NULL)
			break;
		if (i > 0 && applets && strcmp(a, applets[i - 1]) == 0)
			continue;
		p = xasprintf("/bin/%s", a);
		r = lg_cpio_add_symlink(c, p, "busybox", err);
	}
	lg_strv_free(applets);

	for (size_t i = 0; r == 0 && i < ARRAY_SIZE(initramfs_etc); i++)
		r = lg_cpio_add_data(c, initramfs_etc[i].path, 0644, initramfs_etc[i].text,
				     strlen(initramfs_etc[i].text), err);

	for (size_t i = 0; r == 0 && i < nmods; i++) {
		cleanup_free void *data = NULL;
		cleanup_free char *dest =
		    xasprintf("/lib/modules/%s/%s", k->version, mods[i].relpath);
		size_t len;
		char *t;

		r = lg_kmod_read(mods[i].path, &data, &len, err);
		if (r == 0)
			r = lg_cpio_add_data(c, dest, 0644, data, len, err);
		t = xasprintf("%s%s\n", list, dest);
		free(list);
		list = t;
	}
	list_len = strlen(list);
	if (r == 0)
		r = lg_cpio_add_data(c, MODULE_LIST, 0644, list, list_len, err);
	if (r == 0)
		r = lg_cpio_finish(c, err);
	lg_cpio_free(c);
	return r;
}

/* ---- manifest ---- */

static void rfc3339_now(char buf[32])
{
	int64_t sde = lg_env()->source_date_epoch;
	time_t t = time(NULL);
	struct tm tm;

	/* Reproducible builds pin the timestamp. */
	if (sde >= 0)
		t = (time_t)sde;
	gmtime_r(&t, &tm);
	strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int file_entry(const char *path, json_t **out, struct lg_err **err)
{
	char hex[LG_SHA256_HEX_LEN + 1];
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	uint64_t size;
	int r;

	if (fd < 0)
		return lg_err_sys(err, "open `%s`", path);
	if ((r = lg_sha256_fd(fd, hex, &size, err)) < 0)
		return lg_err_wrap(err, "`%s`", path);
	*out = json_pack("{s:I, s:s}", "size", (json_int_t)size, "sha256", hex);
	if (*out == NULL)
		return fail(err, ENOMEM, "build manifest entry");
	return 0;
}

/* What a rootfs image's manifest records beyond the files. */
struct rootfs_info {
	const char *source; /* "debian" or "import" */
	const char *suite;  /* or NULL */
	const char *const *packages;
	const struct lg_image_spec *spec; /* for "defaults", or NULL */
	const char *compress;
	struct lg_rootfs_stats stats;
};

static int add_file_entry(json_t *files, const char *dir, const char *file, struct lg_err **err)
{
	cleanup_free char *path = xasprintf("%s/%s", dir, file);
	json_t *e = NULL;
	int r;

	if ((r = file_entry(path, &e, err)) < 0)
		return r;
	json_object_set_new(files, file, e);
	return 0;
}

static json_t *json_strv_new(const char *const *v)
{
	json_t *a = json_array();

	for (size_t i = 0; v != NULL && v[i] != NULL; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

static json_t *defaults_object(const struct lg_image_spec *spec)
{
	json_t *d = json_object();

	if (spec == NULL)
		return d;
	if (spec->env != NULL && spec->env[0] != NULL)
		json_object_set_new(d, "env", json_strv_new((const char *const *)spec->env));
	if (spec->workdir != NULL)
		json_object_set_new(d, "workdir", json_string(spec->workdir));
	if (spec->user != NULL)
		json_object_set_new(d, "user", json_string(spec->user));
	return d;
}

static int write_manifest(const char *dir, const char *name, const char *version,
			  const char *agent_sha, const struct lg_kmod *mods, size_t nmods,
			  const struct rootfs_info *rfs, const char *rebuild,
			  char rootfs_sha[LG_SHA256_HEX_LEN + 1], struct lg_err **err)
{
	cleanup_free char *mpath = xasprintf("%s/%s", dir, MANIFEST_FILE);
	cleanup_free char *agent = xasprintf("sha256:%s", agent_sha);
	cleanup_free char *text = NULL;
	cleanup_close int fd = -1;
	json_t *files = json_object(), *modules = json_array(), *m;
	char created[32];
	ssize_t w;
	int r;

	if ((r = add_file_entry(files, dir, KERNEL_FILE, err)) < 0 ||
	    (r = add_file_entry(files, dir, INITRD_FILE, err)) < 0 ||
	    (rfs != NULL && (r = add_file_entry(files, dir, ROOTFS_FILE, err)) < 0)) {
		json_decref(files);
		json_decref(modules);
		return r;
	}
	if (rfs != NULL)
		snprintf(rootfs_sha, LG_SHA256_HEX_LEN + 1, "%s",
			 json_string_value(
			     json_object_get(json_object_get(files, ROOTFS_FILE), "sha256")));
	for (size_t i = 0; i < nmods; i++)
		json_array_append_new(modules, json_string(mods[i].name));
	rfc3339_now(created);
	m = json_pack("{s:i, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:s}", "format",
		      LG_IMAGE_FORMAT, "name", name, "kind", rfs ? "rootfs" : "initramfs",
		      "kernel_version", version, "created", created, "agent", agent, "builder",
		      "luminaguard " LG_VERSION, "modules", modules, "files", files, "rebuild",
		      rebuild);
	if (m == NULL)
		return fail(err, ENOMEM, "build manifest");
	if (rfs != NULL) {
		json_t *defs = defaults_object(rfs->spec);

		json_object_set_new(m, "rootfs",
				    json_pack("{s:s, s:s, s:o, s:o, s:I, s:b, s:s}", "fs", "erofs",
					      "compression", rfs->compress, "suite",
					      rfs->suite ? json_string(rfs->suite) : json_null(),
					      "packages", json_strv_new(rfs->packages),
					      "installed_packages", (json_int_t)rfs->stats.packages,
					      "owners", rfs->stats.owners_kept, "source",
					      rfs->source));
		if (json_object_size(defs) > 0)
			json_object_set_new(m, "defaults", defs);
		else
			json_decref(defs);
	}
	text = json_dumps(m, JSON_INDENT(2));
	json_decref(m);
	if (text == NULL)
		return fail(err, ENOMEM, "serialize manifest");
	fd = open(mpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return lg_err_sys(err, "create `%s`", mpath);
	w = lg_write_all(fd, text, strlen(text));
	if (w >= 0)
		w = lg_write_all(fd, "\n", 1);
	if (w < 0)
		return lg_err_set(err, (int)-w, "write `%s`", mpath);
	if (fsync(fd) < 0)
		return lg_err_sys(err, "fsync `%s`", mpath);
	return 0;
}

/* ---- the store ---- */

/* Takes the store's lock, creating the store if needed.  Returns the fd or negative. */
static int lock_store(const char *images, struct lg_err **err)
{
	cleanup_free char *lock = xasprintf("%s/.lock", images);
	int fd, r;

	if ((r = lg_mkdir_p(images, 0755)) < 0)
		return lg_err_set(err, -r, "create `%s`", images);
	fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return lg_err_sys(err, "open `%s`", lock);
	while (flock(fd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			r = lg_err_sys(err, "lock `%s`", lock);
			close(fd);
			return r;
		}
	}
	return fd;
}

/* Removes leftovers of interrupted builds of name (we hold the lock: none is running). */
static void remove_stale(const char *images, const char *name)
{
	cleanup_free char *prefix = xasprintf(".%s.", name);
	DIR *d = opendir(images);
	struct dirent *de;

	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (strncmp(de->d_name, prefix, strlen(prefix)) == 0) {
			cleanup_free char *p = xasprintf("%s/%s", images, de->d_name);
			lg_rm_rf(p);
		}
	}
	closedir(d);
}

static void fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
}

/*
 * Moves the finished tmp over final.  With RENAME_EXCHANGE a reader sees
 * the old image or the new one, never a gap; the old one ends up at tmp.
 */
static int replace_dir(const char *images, const char *tmp, const char *final, struct lg_err **err)
{
	if (rename(tmp, final) == 0)
		goto done;
	if (errno != EEXIST && errno != ENOTEMPTY)
		return lg_err_sys(err, "rename `%s` to `%s`", tmp, final);
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, final, RENAME_EXCHANGE) < 0) {
		/* File systems without RENAME_EXCHANGE: a short gap instead. */
		cleanup_free char *old = xasprintf("%s.old", tmp);
		if (rename(final, old) < 0)
			return lg_err_sys(err, "rename `%s` to `%s`", final, old);
		if (rename(tmp, final) < 0) {
			int r = lg_err_sys(err, "rename `%s` to `%s`", tmp, final);
			if (rename(old, final) < 0)
				lg_warn("could not restore `%s` from `%s`: %s", final, old,
					strerror(errno));
			return r;
		}
		lg_rm_rf(old);
		goto done;
	}
	lg_rm_rf(tmp);
done:
	fsync_dir(images);
	return 0;
}

/* ---- opening and checking ---- */

const char *lg_image_kind_name(enum lg_image_kind kind)
{
	return kind == LG_IMAGE_ROOTFS ? "rootfs" : "initramfs";
}

void lg_image_free(struct lg_image *img)
{
	if (img == NULL)
		return;
	free(img->name);
	free(img->dir);
	free(img->kernel);
	free(img->initrd);
	free(img->kernel_version);
	free(img->agent);
	free(img->cmdline_hint);
	lg_strv_free(img->modules);
	free(img->rootfs);
	free(img->rootfs_sha256);
	lg_strv_free(img->packages);
	free(img->suite);
	lg_strv_free(img->env);
	free(img->workdir);
	free(img->user);
	free(img->rebuild);
	free(img);
}

static bool is_hex_digest(const char *s)
{
	if (strlen(s) != LG_SHA256_HEX_LEN)
		return false;
	for (const char *p = s; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return false;
	return true;
}

/*
 * A manifest string that ends up in a message on the user's terminal: no
 * NUL inside, no C0 or C1 control characters (an escape sequence in a
 * tampered manifest must not reach the terminal).
 */
static bool printable_text(json_t *v, size_t max)
{
	const unsigned char *s;
	size_t len;

	if (!json_is_string(v))
		return false;
	s = (const unsigned char *)json_string_value(v);
	len = json_string_length(v);
	if (len == 0 || len > max || strlen((const char *)s) != len)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < 0x20 || s[i] == 0x7f)
			return false;
		if (s[i] == 0xc2 && i + 1 < len && s[i + 1] >= 0x80 && s[i + 1] <= 0x9f)
			return false; /* U+0080..U+009F in UTF-8 */
	}
	return true;
}

/* What opening an image names in its messages. */
struct opening {
	const char *name;
	const char *dir;
	const char *hint; /* how to rebuild it: the manifest's "rebuild" once read */
};

enum open_mode {
	OPEN_QUICK, /* every run: sizes and magic; rootfs.erofs hashed only when its stamp differs
		     */
	OPEN_LIST,  /* OPEN_QUICK plus the SHA-256 of vmlinux and initramfs.cpio */
	OPEN_FULL,  /* the SHA-256 of every file, whatever the stamp says */
};

/*
 * Checks one file of the image against its manifest entry and its magic
 * (mlen bytes at offset moff).  On success *fd_out is the open file and
 * *sha_out the manifest's digest (owned by files).
 */
static int check_file(const struct opening *op, json_t *files, const char *file, const char *magic,
		      size_t mlen, uint64_t moff, uint64_t *size_out, int *fd_out,
		      const char **sha_out, struct lg_err **err)
{
	cleanup_free char *path = xasprintf("%s/%s", op->dir, file);
	cleanup_close int fd = -1;
	json_t *e = json_object_get(files, file);
	json_t *size = json_object_get(e, "size");
	json_t *sha = json_object_get(e, "sha256");
	char head[8];
	struct stat st;

	if (!json_is_integer(size) || json_integer_value(size) < 0 || !json_is_string(sha) ||
	    !is_hex_digest(json_string_value(sha)))
		return damaged(err, op->name, op->hint, "manifest has no valid entry for %s", file);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return damaged(err, op->name, op->hint, "%s is missing", file);
		return lg_err_sys(err, "open `%s`", path);
	}
	if (fstat(fd, &st) < 0)
		return lg_err_sys(err, "stat `%s`", path);
	if (!S_ISREG(st.st_mode))
		return damaged(err, op->name, op->hint, "%s is not a regular file", file);
	if ((uint64_t)st.st_size != (uint64_t)json_integer_value(size))
		return damaged(err, op->name, op->hint, "%s has %llu bytes, the manifest says %lld",
			       file, (unsigned long long)st.st_size,
			       (long long)json_integer_value(size));
	if (lg_pread_exact(fd, head, mlen, moff, (uint64_t)st.st_size) < 0 ||
	    memcmp(head, magic, mlen) != 0)
		return damaged(err, op->name, op->hint, "%s does not have the expected magic",
			       file);
	*size_out = (uint64_t)st.st_size;
	*sha_out = json_string_value(sha);
	*fd_out = steal_fd(&fd);
	return 0;
}

/* Hashes fd from its start and compares with the manifest's digest. */
static int check_digest(const struct opening *op, int fd, const char *file, const char *want,
			struct lg_err **err)
{
	char hex[LG_SHA256_HEX_LEN + 1];
	int r;

	if (lseek(fd, 0, SEEK_SET) < 0)
		return lg_err_sys(err, "seek `%s/%s`", op->dir, file);
	if ((r = lg_sha256_fd(fd, hex, NULL, err)) < 0)
		return lg_err_wrap(err, "`%s/%s`", op->dir, file);
	if (strcmp(hex, want) != 0)
		return damaged(err, op->name, op->hint, "%s: SHA-256 differs from the manifest",
			       file);
	return 0;
}

/*
 * The verified stamp: rootfs.erofs's identity (device, inode, size, mtime,
 * ctime to the nanosecond) when it last matched the digest named in the
 * stamp.  Any write to the file, or a replacement, changes ctime or the
 * inode, and no unprivileged user can set ctime back, so an unchanged
 * stamp lets every run skip hashing 100+ MiB.  It guards against the file
 * being changed through the file system (a stray write, a partial copy),
 * not against media errors that bypass it, nor against whoever can write
 * the image directory: they could rewrite the manifest as well.
 */
static char *stamp_text(const struct stat *st, const char *sha)
{
	return xasprintf("lg-verified 1 dev=%llu ino=%llu size=%lld mtime=%lld.%09ld "
			 "ctime=%lld.%09ld sha256=%s\n",
			 (unsigned long long)st->st_dev, (unsigned long long)st->st_ino,
			 (long long)st->st_size, (long long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec,
			 (long long)st->st_ctim.tv_sec, st->st_ctim.tv_nsec, sha);
}

static bool stamp_matches(const char *dir, const char *want)
{
	cleanup_free char *path = xasprintf("%s/%s", dir, STAMP_FILE);
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	char buf[STAMP_MAX];
	ssize_t n;

	if (fd < 0)
		return false;
	n = lg_read_all(fd, buf, sizeof(buf));
	return n == (ssize_t)strlen(want) && memcmp(buf, want, (size_t)n) == 0;
}

/* Replaces dir/.verified atomically (a concurrent run reads the old stamp or the new one). */
static int write_stamp(const char *dir, const char *text, struct lg_err **err)
{
	cleanup_free char *path = xasprintf("%s/%s", dir, STAMP_FILE);
	cleanup_free char *tmp = xasprintf("%s/%s.XXXXXX", dir, STAMP_FILE);
	cleanup_close int fd = mkostemp(tmp, O_CLOEXEC);
	ssize_t w;

	if (fd < 0)
		return lg_err_sys(err, "create a file in `%s`", dir);
	w = lg_write_all(fd, text, strlen(text));
	if (w < 0 || fchmod(fd, 0644) < 0 || rename(tmp, path) < 0) {
		int r = w < 0 ? lg_err_set(err, (int)-w, "write `%s`", tmp)
			      : lg_err_sys(err, "write `%s`", path);
		unlink(tmp);
		return r;
	}
	return 0;
}

static bool same_file_state(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
	       a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/*
 * rootfs.erofs against its digest: trusted when the stamp still describes
 * it (trust_stamp), else hashed; a match rewrites the stamp when the
 * directory is writable (a read-only store is hashed on every open).
 */
static int check_rootfs(const struct opening *op, int fd, const char *want, bool trust_stamp,
			struct lg_err **err)
{
	cleanup_free char *stamp = NULL;
	struct stat before, after;
	int r;

	if (fstat(fd, &before) < 0)
		return lg_err_sys(err, "stat `%s/%s`", op->dir, ROOTFS_FILE);
	stamp = stamp_text(&before, want);
	if (trust_stamp && stamp_matches(op->dir, stamp))
		return 0;
	if (trust_stamp)
		lg_info("image '%s': %s changed since it was last checked; checking its SHA-256",
			op->name, ROOTFS_FILE);
	if ((r = check_digest(op, fd, ROOTFS_FILE, want, err)) < 0)
		return r;
	/* Changed while it was read: what was hashed matched, but vouch for nothing. */
	if (fstat(fd, &after) < 0 || !same_file_state(&before, &after))
		return 0;
	if (access(op->dir, W_OK) == 0 && write_stamp(op->dir, stamp, NULL) < 0)
		lg_info("image '%s': could not record the check in `%s/%s`", op->name, op->dir,
			STAMP_FILE);
	return 0;
}

static char *absolute(const char *path)
{
	char buf[PATH_MAX];

	if (realpath(path, buf) != NULL)
		return xstrdup(buf);
	return xstrdup(path);
}

/* A NULL-terminated copy of a JSON array of strings, each passing valid; NULL if not one. */
static char **json_strv(json_t *a, bool (*valid)(const char *))
{
	char **v;

	if (a == NULL)
		return xzalloc(sizeof(char *));
	if (!json_is_array(a))
		return NULL;
	v = xzalloc((json_array_size(a) + 1) * sizeof(char *));
	for (size_t i = 0; i < json_array_size(a); i++) {
		json_t *e = json_array_get(a, i);

		if (!json_is_string(e) || strlen(json_string_value(e)) != json_string_length(e) ||
		    (valid != NULL && !valid(json_string_value(e)))) {
			lg_strv_free(v);
			return NULL;
		}
		v[i] = xstrdup(json_string_value(e));
	}
	return v;
}

static bool env_entry_valid(const char *s)
{
	const char *eq = strchr(s, '=');
	return eq != NULL && eq != s;
}

/* The "rootfs" and "defaults" objects of a format-2 manifest. */
static int parse_rootfs_fields(const struct opening *op, json_t *m, struct lg_image *img,
			       struct lg_err **err)
{
	json_t *rfs = json_object_get(m, "rootfs");
	json_t *defs = json_object_get(m, "defaults");
	json_t *v;

	if (img->kind == LG_IMAGE_ROOTFS) {
		if (!json_is_object(rfs))
			return damaged(err, op->name, op->hint,
				       "manifest has no \"rootfs\" object");
		img->packages = json_strv(json_object_get(rfs, "packages"), lg_package_name_valid);
		if (img->packages == NULL)
			return damaged(err, op->name, op->hint, "manifest has invalid packages");
		v = json_object_get(rfs, "suite");
		if (json_is_string(v) && lg_suite_name_valid(json_string_value(v)))
			img->suite = xstrdup(json_string_value(v));
		else if (v != NULL && !json_is_null(v))
			return damaged(err, op->name, op->hint, "manifest has an invalid suite");
		v = json_object_get(rfs, "installed_packages");
		if (json_is_integer(v) && json_integer_value(v) >= 0 &&
		    json_integer_value(v) <= UINT32_MAX)
			img->installed_packages = (unsigned)json_integer_value(v);
	} else {
		img->packages = xzalloc(sizeof(char *));
	}
	if (defs != NULL && !json_is_object(defs))
		return damaged(err, op->name, op->hint, "manifest has invalid defaults");
	img->env = json_strv(json_object_get(defs, "env"), env_entry_valid);
	if (img->env == NULL)
		return damaged(err, op->name, op->hint, "manifest has an invalid default env");
	v = json_object_get(defs, "workdir");
	if (v != NULL) {
		if (!json_is_string(v) || json_string_value(v)[0] != '/' ||
		    strlen(json_string_value(v)) != json_string_length(v))
			return damaged(err, op->name, op->hint,
				       "manifest has an invalid default workdir");
		img->workdir = xstrdup(json_string_value(v));
	}
	v = json_object_get(defs, "user");
	if (v != NULL) {
		if (!json_is_string(v) || !lg_user_name_valid(json_string_value(v)))
			return damaged(err, op->name, op->hint,
				       "manifest has an invalid default user");
		img->user = xstrdup(json_string_value(v));
	}
	return 0;
}

static int open_image(const char *name, enum open_mode mode, struct lg_image **out,
		      struct lg_err **err)
{
	cleanup_free char *images = lg_images_dir();
	cleanup_free char *dir = NULL;
	cleanup_free char *mpath = NULL;
	cleanup_free char *hint = NULL;
	struct opening op = {.name = name};
	struct lg_image *img = NULL;
	json_error_t jerr;
	json_t *m = NULL, *files, *mods, *v;
	const char *ksha, *isha, *rsha = NULL;
	int kfd = -1, ifd = -1, rfd = -1;
	json_int_t format;
	struct stat st;
	int r;

	*out = NULL;
	if (!lg_image_name_valid(name))
		return invalid_name(name, err);
	dir = xasprintf("%s/%s", images, name);
	op.dir = dir;
	hint = build_hint(name);
	op.hint = hint;
	if (stat(dir, &st) < 0) {
		if (errno != ENOENT && errno != ENOTDIR)
			return lg_err_sys(err, "stat `%s`", dir);
		st.st_mode = 0;
	}
	if (!S_ISDIR(st.st_mode))
		return fail(err, ENOENT, "image '%s' not found in `%s`; build it with: %s", name,
			    images, hint);
	mpath = xasprintf("%s/%s", dir, MANIFEST_FILE);
	if (stat(mpath, &st) == 0 && (uint64_t)st.st_size > MANIFEST_MAX)
		return damaged(err, name, hint, "manifest.json is too big");
	m = json_load_file(mpath, JSON_REJECT_DUPLICATES, &jerr);
	if (m == NULL) {
		if (access(mpath, F_OK) < 0)
			return damaged(err, name, hint, "manifest.json is missing");
		return damaged(err, name, hint, "manifest.json: %s (line %d)", jerr.text,
			       jerr.line);
	}
	r = -1;
	v = json_object_get(m, "format");
	format = json_is_integer(v) ? json_integer_value(v) : -1;
	if (format != 1 && format != LG_IMAGE_FORMAT) {
		r = damaged(err, name, hint,
			    "manifest format is not 1 or %d (built by another version?)",
			    LG_IMAGE_FORMAT);
		goto fail;
	}
	/* From here on the manifest says how to rebuild the image. */
	v = json_object_get(m, "rebuild");
	free(hint);
	if (format == 1)
		hint = initramfs_hint(name);
	else if (printable_text(v, REBUILD_MAX))
		hint = xstrdup(json_string_value(v));
	else
		hint = build_hint(name);
	op.hint = hint;
	v = json_object_get(m, "name");
	if (!json_is_string(v) || strcmp(json_string_value(v), name) != 0) {
		r = damaged(err, name, hint, "manifest is for another image name");
		goto fail;
	}
	img = xzalloc(sizeof(*img));
	img->name = xstrdup(name);
	img->dir = absolute(dir);
	img->kernel = xasprintf("%s/%s", img->dir, KERNEL_FILE);
	img->initrd = xasprintf("%s/%s", img->dir, INITRD_FILE);
	img->rebuild = xstrdup(hint);
	v = json_object_get(m, "kernel_version");
	if (!json_is_string(v) || !version_ok(json_string_value(v))) {
		r = damaged(err, name, hint, "manifest has no valid kernel_version");
		goto fail;
	}
	img->kernel_version = xstrdup(json_string_value(v));
	v = json_object_get(m, "agent");
	img->agent = xstrdup(json_is_string(v) ? json_string_value(v) : "");
	v = json_object_get(m, "cmdline_hint");
	if (json_is_string(v))
		img->cmdline_hint = xstrdup(json_string_value(v));
	mods = json_object_get(m, "modules");
	img->modules = xzalloc((json_array_size(mods) + 1) * sizeof(char *));
	for (size_t i = 0, j = 0; i < json_array_size(mods); i++) {
		v = json_array_get(mods, i);
		if (json_is_string(v))
			img->modules[j++] = xstrdup(json_string_value(v));
	}
	img->kind = LG_IMAGE_INITRAMFS;
	if (format >= 2) {
		const char *kind = json_string_value(json_object_get(m, "kind"));

		if (kind != NULL && strcmp(kind, "rootfs") == 0) {
			img->kind = LG_IMAGE_ROOTFS;
		} else if (kind == NULL || strcmp(kind, "initramfs") != 0) {
			r = damaged(err, name, hint, "manifest has no valid kind");
			goto fail;
		}
	}
	if ((r = parse_rootfs_fields(&op, m, img, err)) < 0)
		goto fail;
	files = json_object_get(m, "files");
	if (!json_is_object(files)) {
		r = damaged(err, name, hint, "manifest has no files");
		goto fail;
	}
	if ((r = check_file(&op, files, KERNEL_FILE, ELFMAG, SELFMAG, 0, &img->kernel_size, &kfd,
			    &ksha, err)) < 0 ||
	    (r = check_file(&op, files, INITRD_FILE, "070701", 6, 0, &img->initrd_size, &ifd, &isha,
			    err)) < 0)
		goto fail;
	if (img->kind == LG_IMAGE_ROOTFS) {
		if ((r = check_file(&op, files, ROOTFS_FILE, EROFS_MAGIC, 4, EROFS_SB_OFFSET,
				    &img->rootfs_size, &rfd, &rsha, err)) < 0)
			goto fail;
		img->rootfs = xasprintf("%s/%s", img->dir, ROOTFS_FILE);
		img->rootfs_sha256 = xstrdup(rsha);
	}
	if (mode != OPEN_QUICK && ((r = check_digest(&op, kfd, KERNEL_FILE, ksha, err)) < 0 ||
				   (r = check_digest(&op, ifd, INITRD_FILE, isha, err)) < 0))
		goto fail;
	if (rfd >= 0 && (r = check_rootfs(&op, rfd, rsha, mode != OPEN_FULL, err)) < 0)
		goto fail;
	r = 0;
	*out = steal_pointer(&img);
fail:
	if (kfd >= 0)
		close(kfd);
	if (ifd >= 0)
		close(ifd);
	if (rfd >= 0)
		close(rfd);
	json_decref(m);
	lg_image_free(img);
	return r;
}

int lg_image_open(const char *name, struct lg_image **out, struct lg_err **err)
{
	return open_image(name, OPEN_QUICK, out, err);
}

int lg_image_check(const char *name, struct lg_image **out, struct lg_err **err)
{
	return open_image(name, OPEN_LIST, out, err);
}

int lg_image_verify(const char *name, struct lg_err **err)
{
	struct lg_image *img = NULL;
	int r = open_image(name, OPEN_FULL, &img, err);

	lg_image_free(img);
	return r;
}

/* ---- building ---- */

/* What is built: the options with the spec's defaults applied. */
struct plan {
	const char *name;
	bool rootfs;		     /* a rootfs image (else initramfs) */
	bool debian;		     /* its root from mmdebstrap (else import_tar) */
	const char *suite;	     /* as asked, or NULL: the host's */
	const char *const *packages; /* Debian packages asked for, NULL-terminated or NULL */
	const char *compress;
	char *rebuild;
};

static bool cancelled(const struct lg_image_build_opts *o)
{
	return o->cancelled != NULL && o->cancelled() != 0;
}

/* An argument as a POSIX shell reads it back: plain when safe, else single-quoted. */
static char *shell_quote(const char *s)
{
	static const char safe[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
				   "_./,:=+@%-";
	size_t n = 0;
	char *q, *p;

	if (*s != '\0' && strspn(s, safe) == strlen(s))
		return xstrdup(s);
	for (const char *c = s; *c; c++)
		n += *c == '\'' ? 4 : 1;
	q = p = xmalloc(n + 3);
	*p++ = '\'';
	for (const char *c = s; *c; c++) {
		if (*c == '\'') {
			memcpy(p, "'\\''", 4);
			p += 4;
		} else {
			*p++ = *c;
		}
	}
	*p++ = '\'';
	*p = '\0';
	return q;
}

/* Appends " opt value" (value quoted, made absolute when is_path) to *cmd. */
static void append_arg(char **cmd, const char *opt, const char *value, bool is_path)
{
	cleanup_free char *abs = is_path ? absolute(value) : NULL;
	cleanup_free char *q = shell_quote(abs ? abs : value);
	char *t = opt ? xasprintf("%s %s %s", *cmd, opt, q) : xasprintf("%s %s", *cmd, q);

	free(*cmd);
	*cmd = t;
}

static char *join_csv(const char *const *v)
{
	char *s = xstrdup("");

	for (size_t i = 0; v != NULL && v[i] != NULL; i++) {
		char *t = xasprintf("%s%s%s", s, i ? "," : "", v[i]);
		free(s);
		s = t;
	}
	return s;
}

/*
 * The command line that builds this image again: the options as given
 * (the spec by its absolute path, not its contents, so editing the spec
 * and running it again picks up the edit), paths made absolute.
 */
static char *compose_rebuild(const struct lg_image_build_opts *o, const struct plan *p)
{
	char *cmd;

	if (o->import_tar != NULL) {
		cmd = xstrdup("luminaguard image import");
		append_arg(&cmd, NULL, p->name, false);
		append_arg(&cmd, NULL, o->import_tar, true);
	} else {
		cmd = xstrdup("luminaguard image build");
		if (o->spec != NULL && o->spec_path != NULL)
			append_arg(&cmd, "-f", o->spec_path, true);
		/* --name only where it changes something: a spec may name another image. */
		if (o->spec != NULL || strcmp(p->name, LG_IMAGE_DEFAULT_NAME) != 0)
			if (o->name != NULL || o->spec_path == NULL)
				append_arg(&cmd, "--name", p->name, false);
		/* A spec known only by its contents: what it asked for, spelled out. */
		if (o->packages != NULL || (o->spec != NULL && o->spec_path == NULL)) {
			cleanup_free char *csv = join_csv(p->packages);
			if (csv[0] != '\0')
				append_arg(&cmd, "--packages", csv, false);
		}
		if (o->suite != NULL || (o->spec != NULL && o->spec_path == NULL && p->suite))
			append_arg(&cmd, "--suite", p->suite, false);
	}
	if (o->compress != NULL)
		append_arg(&cmd, "--compress", o->compress, false);
	if (o->kernel_dir != NULL)
		append_arg(&cmd, "--kernel-dir", o->kernel_dir, true);
	if (o->kernel_version != NULL)
		append_arg(&cmd, "--kernel-version", o->kernel_version, false);
	if (o->agent_path != NULL)
		append_arg(&cmd, "--agent", o->agent_path, true);
	if (o->busybox_path != NULL)
		append_arg(&cmd, "--busybox", o->busybox_path, true);
	for (size_t i = 0; o->extra_modules != NULL && o->extra_modules[i] != NULL; i++)
		append_arg(&cmd, "--module", o->extra_modules[i], false);
	return cmd;
}

/* Applies the spec's defaults and checks the options that cost nothing to check. */
static int make_plan(const struct lg_image_build_opts *o, struct plan *p, struct lg_err **err)
{
	const struct lg_image_spec *spec = o->spec;

	p->name = o->name ? o->name : spec && spec->name ? spec->name : LG_IMAGE_DEFAULT_NAME;
	if (!lg_image_name_valid(p->name))
		return invalid_name(p->name, err);
	if (o->import_tar != NULL && (o->packages != NULL || spec != NULL || o->suite != NULL))
		return fail(err, EINVAL,
			    "an imported root file system takes no packages, suite or spec "
			    "file: they are for Debian images");
	p->suite = o->suite ? o->suite : spec ? spec->suite : NULL;
	p->packages = o->packages ? o->packages : spec ? (const char *const *)spec->packages : NULL;
	p->debian = o->packages != NULL || spec != NULL || o->suite != NULL;
	p->rootfs = p->debian || o->import_tar != NULL;
	p->compress = o->compress ? o->compress : "lz4hc";
	if (strcmp(p->compress, "lz4hc") != 0 && strcmp(p->compress, "none") != 0)
		return fail(err, EINVAL, "unknown compression `%.40s`: use lz4hc or none",
			    p->compress);
	if (o->compress != NULL && !p->rootfs)
		return fail(err, EINVAL,
			    "--compress is for root file system images (--packages, -f or "
			    "image import)");
	if (p->suite != NULL && !lg_suite_name_valid(p->suite))
		return fail(err, EINVAL, "invalid suite `%.80s`", p->suite);
	for (size_t i = 0; p->packages != NULL && p->packages[i] != NULL; i++)
		if (!lg_package_name_valid(p->packages[i]))
			return fail(err, EINVAL, "invalid package name `%.130s`", p->packages[i]);
	if (o->import_tar != NULL) {
		struct stat st;

		if (stat(o->import_tar, &st) < 0)
			return lg_err_sys(err, "rootfs tarball `%s`", o->import_tar);
		if (S_ISDIR(st.st_mode))
			return fail(err, EISDIR,
				    "rootfs tarball `%s` is a directory; make a tar of it first "
				    "(tar -C DIR -cf rootfs.tar .)",
				    o->import_tar);
	}
	p->rebuild = o->rebuild ? xstrdup(o->rebuild) : compose_rebuild(o, p);
	return 0;
}

/* tmp/rootfs.erofs from Debian or the user's tarball; fills info->stats. */
static int build_rootfs(const struct lg_image_build_opts *o, const struct plan *p, const char *tmp,
			struct rootfs_info *info, struct lg_err **err)
{
	cleanup_free char *tar = xasprintf("%s/%s", tmp, ROOTFS_TAR);
	cleanup_free char *work = xasprintf("%s/%s", tmp, ROOTFS_WORK);
	cleanup_free char *out = xasprintf("%s/%s", tmp, ROOTFS_FILE);
	struct lg_rootfs_opts ro = {
	    .compress = p->compress, .progress = o->progress, .progress_data = o->progress_data};
	int r;

	if (p->debian) {
		/*
		 * The packages are the plan's (the flags' or else the spec's), so
		 * the spec goes over with none of its own: --packages replaces the
		 * spec's list rather than adding to it.
		 */
		static char *const no_packages[] = {NULL};
		struct lg_image_spec spec = o->spec ? *o->spec : (struct lg_image_spec){0};
		struct lg_debian_opts d = {
		    .suite = info->suite,
		    .packages = p->packages,
		    .spec = o->spec ? &spec : NULL,
		    .progress = o->progress,
		    .progress_data = o->progress_data,
		};

		spec.packages = (char **)no_packages;
		r = lg_rootfs_debian(&d, tar, err);
		if (r == 0 && cancelled(o))
			r = fail(err, EINTR, "interrupted");
		if (r < 0) {
			unlink(tar);
			return r;
		}
	}
	r = lg_rootfs_from_tar(p->debian ? tar : o->import_tar, work, out, &ro, &info->stats, err);
	if (p->debian)
		unlink(tar);
	if (r < 0)
		return r;
	/* As root the jailed VMM runs under another uid: it must be able to read the base. */
	if (chmod(out, 0644) < 0)
		return lg_err_sys(err, "chmod `%s`", out);
	return 0;
}

static int build_locked(const struct lg_image_build_opts *o, const struct plan *p, const char *tmp,
			struct lg_err **err)
{
	cleanup_free char *agent = NULL;
	cleanup_free char *host_suite = NULL;
	const char *busybox = o->busybox_path ? o->busybox_path : "/bin/busybox";
	cleanup_free char *kpath = xasprintf("%s/%s", tmp, KERNEL_FILE);
	cleanup_free char *ipath = xasprintf("%s/%s", tmp, INITRD_FILE);
	cleanup_free char *rpath = xasprintf("%s/%s", tmp, ROOTFS_FILE);
	const char *const *base = p->rootfs ? rootfs_modules : NULL;
	const char *const *optional = p->rootfs ? rootfs_optional_modules : optional_modules;
	char agent_sha[LG_SHA256_HEX_LEN + 1];
	char rootfs_sha[LG_SHA256_HEX_LEN + 1] = "";
	struct rootfs_info info = {0};
	struct kernel_src k = {0};
	struct lg_kmod *mods = NULL;
	const char **want = NULL;
	size_t nmods = 0, nextra = 0, nbase = 0, nw = 0;
	cleanup_close int fd = -1;
	int r;

	if (o->agent_path != NULL)
		agent = xstrdup(o->agent_path);
	else if ((agent = lg_find_helper("lg-agent")) == NULL)
		return fail(err, ENOENT,
			    "lg-agent not found next to luminaguard or in "
			    "$LUMINAGUARD_LIBEXEC; pass --agent PATH");
	if ((r = check_static_exec(agent, "agent", "build lg-agent with -static", err)) < 0)
		return r;
	if ((r = check_static_exec(busybox, "busybox",
				   "install busybox-static, or pass --busybox with a static one",
				   err)) < 0)
		return r;
	if ((r = lg_sha256_file(agent, agent_sha, err)) < 0)
		return r;

	/* The kernel and initramfs first: they take a second, the root a minute. */
	if ((r = find_kernel(o, &k, err)) < 0)
		return r;
	progress(o, "kernel %s from `%s`", k.version, k.vmlinuz);

	progress(o, "extracting vmlinux");
	if ((r = lg_vmlinux_extract(k.vmlinuz, kpath, err)) < 0 ||
	    (r = lg_vmlinux_check(kpath, err)) < 0)
		goto out;

	while (o->extra_modules != NULL && o->extra_modules[nextra] != NULL)
		nextra++;
	while (base != NULL && base[nbase] != NULL)
		nbase++;
	want = xzalloc((ARRAY_SIZE(required_modules) + nbase + nextra) * sizeof(*want));
	for (size_t i = 0; required_modules[i] != NULL; i++)
		want[nw++] = required_modules[i];
	for (size_t i = 0; i < nbase; i++)
		want[nw++] = base[i];
	for (size_t i = 0; i < nextra; i++)
		want[nw++] = o->extra_modules[i];
	if ((r = lg_kmod_resolve(k.moddir, want, optional, &mods, &nmods, err)) < 0) {
		lg_err_wrap(err, "kernel modules");
		goto out;
	}
	for (size_t i = 0; i < nmods; i++)
		progress(o, "module %s", mods[i].name);

	progress(o, "writing initramfs");
	fd = open(ipath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		r = lg_err_sys(err, "create `%s`", ipath);
		goto out;
	}
	if ((r = write_initramfs(o, fd, agent, busybox, &k, mods, nmods, err)) < 0) {
		lg_err_wrap(err, "write `%s`", ipath);
		goto out;
	}
	if (fsync(fd) < 0 || close(steal_fd(&fd)) < 0) {
		r = lg_err_sys(err, "write `%s`", ipath);
		goto out;
	}
	if (cancelled(o)) {
		r = fail(err, EINTR, "interrupted");
		goto out;
	}

	if (p->rootfs) {
		info.source = p->debian ? "debian" : "import";
		info.packages = p->packages;
		info.spec = o->spec;
		info.compress = p->compress;
		info.suite = p->suite;
		/* Recorded as built: "the host's release" means something else next year. */
		if (p->debian && info.suite == NULL)
			info.suite = host_suite = lg_host_suite();
		if ((r = build_rootfs(o, p, tmp, &info, err)) < 0)
			goto out;
		if (cancelled(o)) {
			r = fail(err, EINTR, "interrupted");
			goto out;
		}
	}

	progress(o, "writing manifest");
	if ((r = write_manifest(tmp, p->name, k.version, agent_sha, mods, nmods,
				p->rootfs ? &info : NULL, p->rebuild, rootfs_sha, err)) < 0)
		goto out;
	if (p->rootfs) {
		/* Just hashed into the manifest: no run needs to hash it again. */
		cleanup_free char *stamp = NULL;
		struct stat st;

		if (stat(rpath, &st) < 0) {
			r = lg_err_sys(err, "stat `%s`", rpath);
			goto out;
		}
		stamp = stamp_text(&st, rootfs_sha);
		r = write_stamp(tmp, stamp, err);
	}
out:
	free(want);
	lg_kmod_free(mods, nmods);
	kernel_src_clear(&k);
	return r;
}

int lg_image_build(const struct lg_image_build_opts *opts, struct lg_image **out,
		   struct lg_err **err)
{
	static const struct lg_image_build_opts defaults = {0};
	const struct lg_image_build_opts *o = opts ? opts : &defaults;
	cleanup_free char *images = lg_images_dir();
	cleanup_free char *final = NULL;
	cleanup_free char *tmp = NULL;
	cleanup_close int lock = -1;
	struct plan p = {0};
	int r;

	if (out != NULL)
		*out = NULL;
	if ((r = make_plan(o, &p, err)) < 0)
		goto done;
	/*
	 * The lock is held for the whole build, mmdebstrap's minute included:
	 * builds and removals wait for each other, and remove_stale() can tell
	 * an abandoned temporary directory from one in use.  Opening an image
	 * (every run) takes no lock, so a long build never delays a run.
	 */
	if ((r = lock = lock_store(images, err)) < 0)
		goto done;
	remove_stale(images, p.name);
	final = xasprintf("%s/%s", images, p.name);
	/* Hidden, so it can never be taken for an image by lg_image_list(). */
	tmp = xasprintf("%s/.%s.tmp-XXXXXX", images, p.name);
	if (mkdtemp(tmp) == NULL) {
		r = lg_err_sys(err, "create a directory in `%s`", images);
		goto done;
	}
	if (chmod(tmp, 0755) < 0)
		r = lg_err_sys(err, "chmod `%s`", tmp);
	else
		r = build_locked(o, &p, tmp, err);
	if (r == 0 && cancelled(o))
		r = fail(err, EINTR, "interrupted");
	if (r == 0)
		r = replace_dir(images, tmp, final, err);
	if (r < 0) {
		lg_rm_rf(tmp);
		lg_err_wrap(err, "build image '%s'", p.name);
		goto done;
	}
	progress(o, "image '%s' ready in `%s`", p.name, final);
	if (out != NULL)
		r = lg_image_open(p.name, out, err);
done:
	free(p.rebuild);
	return r;
}

int lg_image_list(char ***names, struct lg_err **err)
{
	cleanup_free char *images = lg_images_dir();
	char **v = xzalloc(sizeof(*v));
	size_t n = 0;
	DIR *d;
	struct dirent *de;

	*names = NULL;
	d = opendir(images);
	if (d == NULL) {
		if (errno == ENOENT) {
			*names = v;
			return 0;
		}
		free(v);
		return lg_err_sys(err, "open `%s`", images);
	}
	while ((de = readdir(d)) != NULL) {
		cleanup_free char *p = NULL;

		if (!lg_image_name_valid(de->d_name))
			continue;
		p = xasprintf("%s/%s", images, de->d_name);
		if (!is_dir(p))
			continue;
		v = xrealloc(v, (n + 2) * sizeof(*v));
		v[n++] = xstrdup(de->d_name);
		v[n] = NULL;
	}
	closedir(d);
	qsort(v, n, sizeof(*v), cmp_str);
	*names = v;
	return 0;
}

int lg_image_remove(const char *name, struct lg_err **err)
{
	cleanup_free char *images = lg_images_dir();
	cleanup_free char *dir = NULL;
	cleanup_free char *gone = NULL;
	cleanup_close int lock = -1;
	int r;

	if (!lg_image_name_valid(name))
		return invalid_name(name, err);
	dir = xasprintf("%s/%s", images, name);
	if (!is_dir(dir))
		return fail(err, ENOENT, "image '%s' not found in `%s`", name, images);
	if ((lock = lock_store(images, err)) < 0)
		return lock;
	/* Rename first so that no reader ever sees a half-removed image. */
	gone = xasprintf("%s/.%s.rm", images, name);
	lg_rm_rf(gone);
	if (rename(dir, gone) < 0) {
		if (errno == ENOENT)
			return fail(err, ENOENT, "image '%s' not found in `%s`", name, images);
		return lg_err_sys(err, "rename `%s`", dir);
	}
	fsync_dir(images);
	if ((r = lg_rm_rf(gone)) < 0)
		return lg_err_set(err, -r, "remove `%s`", gone);
	return 0;
}
