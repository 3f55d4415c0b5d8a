/* SPDX-License-Identifier: Apache-2.0 */
#include "image/image.h"

#include "common/err.h"
#include "common/log.h"
#include "common/paths.h"
#include "common/sha256.h"
#include "common/util.h"
#include "image/cpio.h"
#include "image/kmod.h"
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
#define MODULE_LIST   "/etc/lg-modules"
/* busybox --list prints ~400 short names. */
#define APPLET_LIST_MAX (256u << 10)
#define MANIFEST_MAX	(1u << 20)

/* What the guest agent needs: the console port for its channel to the host. */
static const char *const required_modules[] = {
    "virtio_ring", "virtio", "virtio_mmio", "virtio_console", NULL,
};
/* Entropy and disks: nice to have, skipped when the kernel lacks them. */
static const char *const optional_modules[] = {"virtio_rng", "virtio_blk", NULL};

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

/* The command that (re)builds image name, for error messages.  New string. */
static char *build_hint(const char *name)
{
	if (strcmp(name, LG_IMAGE_DEFAULT_NAME) == 0)
		return xstrdup("luminaguard image build");
	return xasprintf("luminaguard image build --name %s", name);
}

static int corrupt(struct lg_err **err, const char *name, const char *dir, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int corrupt(struct lg_err **err, const char *name, const char *dir, const char *fmt, ...)
{
	cleanup_free char *why = NULL;
	cleanup_free char *hint = build_hint(name);
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&why, fmt, ap) < 0)
		why = NULL;
	va_end(ap);
	return fail(err, EINVAL, "image '%s' in `%s` is corrupt: %s; rebuild it with: %s", name,
		    dir, why ? why : "?", hint);
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
	const char *sde = getenv("SOURCE_DATE_EPOCH");
	uint64_t secs;
	time_t t = time(NULL);
	struct tm tm;

	/* Reproducible builds pin the timestamp. */
	if (sde != NULL && lg_parse_u64(sde, 0, INT32_MAX, &secs) == 0)
		t = (time_t)secs;
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

static int write_manifest(const char *dir, const char *name, const char *version,
			  const char *agent_sha, const struct lg_kmod *mods, size_t nmods,
			  struct lg_err **err)
{
	cleanup_free char *kpath = xasprintf("%s/%s", dir, KERNEL_FILE);
	cleanup_free char *ipath = xasprintf("%s/%s", dir, INITRD_FILE);
	cleanup_free char *mpath = xasprintf("%s/%s", dir, MANIFEST_FILE);
	cleanup_free char *agent = xasprintf("sha256:%s", agent_sha);
	cleanup_free char *text = NULL;
	cleanup_close int fd = -1;
	json_t *kentry = NULL, *ientry = NULL, *modules, *m;
	char created[32];
	ssize_t w;
	int r;

	if ((r = file_entry(kpath, &kentry, err)) < 0)
		return r;
	if ((r = file_entry(ipath, &ientry, err)) < 0) {
		json_decref(kentry);
		return r;
	}
	modules = json_array();
	for (size_t i = 0; i < nmods; i++)
		json_array_append_new(modules, json_string(mods[i].name));
	rfc3339_now(created);
	m = json_pack("{s:i, s:s, s:s, s:s, s:s, s:s, s:o, s:{s:o, s:o}}", "format",
		      LG_IMAGE_FORMAT, "name", name, "kernel_version", version, "created", created,
		      "agent", agent, "builder", "luminaguard " LG_VERSION, "modules", modules,
		      "files", KERNEL_FILE, kentry, INITRD_FILE, ientry);
	if (m == NULL)
		return fail(err, ENOMEM, "build manifest");
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

static int build_locked(const struct lg_image_build_opts *o, const char *name, const char *tmp,
			struct lg_err **err)
{
	cleanup_free char *agent = NULL;
	const char *busybox = o->busybox_path ? o->busybox_path : "/bin/busybox";
	cleanup_free char *kpath = xasprintf("%s/%s", tmp, KERNEL_FILE);
	cleanup_free char *ipath = xasprintf("%s/%s", tmp, INITRD_FILE);
	char agent_sha[LG_SHA256_HEX_LEN + 1];
	struct kernel_src k = {0};
	struct lg_kmod *mods = NULL;
	const char **want = NULL;
	size_t nmods = 0, nextra = 0;
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

	if ((r = find_kernel(o, &k, err)) < 0)
		return r;
	progress(o, "kernel %s from `%s`", k.version, k.vmlinuz);

	progress(o, "extracting vmlinux");
	if ((r = lg_vmlinux_extract(k.vmlinuz, kpath, err)) < 0 ||
	    (r = lg_vmlinux_check(kpath, err)) < 0)
		goto out;

	while (o->extra_modules != NULL && o->extra_modules[nextra] != NULL)
		nextra++;
	want = xzalloc((ARRAY_SIZE(required_modules) + nextra) * sizeof(*want));
	for (size_t i = 0; required_modules[i] != NULL; i++)
		want[i] = required_modules[i];
	for (size_t i = 0; i < nextra; i++)
		want[ARRAY_SIZE(required_modules) - 1 + i] = o->extra_modules[i];
	if ((r = lg_kmod_resolve(k.moddir, want, optional_modules, &mods, &nmods, err)) < 0) {
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

	progress(o, "writing manifest");
	r = write_manifest(tmp, name, k.version, agent_sha, mods, nmods, err);
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
	const char *name = o->name ? o->name : LG_IMAGE_DEFAULT_NAME;
	cleanup_free char *images = lg_images_dir();
	cleanup_free char *final = NULL;
	cleanup_free char *tmp = NULL;
	cleanup_close int lock = -1;
	int r;

	if (out != NULL)
		*out = NULL;
	if (!lg_image_name_valid(name))
		return invalid_name(name, err);
	if ((lock = lock_store(images, err)) < 0)
		return lock;
	remove_stale(images, name);
	final = xasprintf("%s/%s", images, name);
	/* Hidden, so it can never be taken for an image by lg_image_list(). */
	tmp = xasprintf("%s/.%s.tmp-XXXXXX", images, name);
	if (mkdtemp(tmp) == NULL)
		return lg_err_sys(err, "create a directory in `%s`", images);
	if (chmod(tmp, 0755) < 0)
		r = lg_err_sys(err, "chmod `%s`", tmp);
	else
		r = build_locked(o, name, tmp, err);
	if (r == 0)
		r = replace_dir(images, tmp, final, err);
	if (r < 0) {
		lg_rm_rf(tmp);
		lg_err_wrap(err, "build image '%s'", name);
		return r;
	}
	progress(o, "image '%s' ready in `%s`", name, final);
	if (out != NULL && (r = lg_image_open(name, out, err)) < 0)
		return r;
	return 0;
}

/* ---- opening and checking ---- */

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

/* Checks one file of the image against its manifest entry and its magic. */
static int check_file(const char *name, const char *dir, json_t *files, const char *file,
		      const char *magic, uint64_t *size_out, struct lg_err **err)
{
	cleanup_free char *path = xasprintf("%s/%s", dir, file);
	cleanup_close int fd = -1;
	json_t *e = json_object_get(files, file);
	json_t *size = json_object_get(e, "size");
	json_t *sha = json_object_get(e, "sha256");
	size_t mlen = strlen(magic);
	char head[8];
	struct stat st;

	if (!json_is_integer(size) || json_integer_value(size) < 0 || !json_is_string(sha) ||
	    !is_hex_digest(json_string_value(sha)))
		return corrupt(err, name, dir, "manifest has no valid entry for %s", file);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return corrupt(err, name, dir, "%s is missing", file);
		return lg_err_sys(err, "open `%s`", path);
	}
	if (fstat(fd, &st) < 0)
		return lg_err_sys(err, "stat `%s`", path);
	if (!S_ISREG(st.st_mode))
		return corrupt(err, name, dir, "%s is not a regular file", file);
	if ((uint64_t)st.st_size != (uint64_t)json_integer_value(size))
		return corrupt(err, name, dir, "%s has %llu bytes, the manifest says %lld", file,
			       (unsigned long long)st.st_size, (long long)json_integer_value(size));
	if (lg_read_all(fd, head, mlen) != (ssize_t)mlen || memcmp(head, magic, mlen) != 0)
		return corrupt(err, name, dir, "%s does not start with the expected magic", file);
	*size_out = (uint64_t)st.st_size;
	return 0;
}

static char *absolute(const char *path)
{
	char buf[PATH_MAX];

	if (realpath(path, buf) != NULL)
		return xstrdup(buf);
	return xstrdup(path);
}

int lg_image_open(const char *name, struct lg_image **out, struct lg_err **err)
{
	cleanup_free char *images = lg_images_dir();
	cleanup_free char *dir = NULL;
	cleanup_free char *mpath = NULL;
	cleanup_free char *hint = NULL;
	struct lg_image *img = NULL;
	json_error_t jerr;
	json_t *m = NULL, *files, *mods, *v;
	struct stat st;
	int r;

	*out = NULL;
	if (!lg_image_name_valid(name))
		return invalid_name(name, err);
	dir = xasprintf("%s/%s", images, name);
	hint = build_hint(name);
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
		return corrupt(err, name, dir, "manifest.json is too big");
	m = json_load_file(mpath, JSON_REJECT_DUPLICATES, &jerr);
	if (m == NULL) {
		if (access(mpath, F_OK) < 0)
			return corrupt(err, name, dir, "manifest.json is missing");
		return corrupt(err, name, dir, "manifest.json: %s (line %d)", jerr.text, jerr.line);
	}
	r = -1;
	v = json_object_get(m, "format");
	if (!json_is_integer(v) || json_integer_value(v) != LG_IMAGE_FORMAT) {
		r = corrupt(err, name, dir, "manifest format is not %d (built by another version?)",
			    LG_IMAGE_FORMAT);
		goto fail;
	}
	v = json_object_get(m, "name");
	if (!json_is_string(v) || strcmp(json_string_value(v), name) != 0) {
		r = corrupt(err, name, dir, "manifest is for another image name");
		goto fail;
	}
	img = xzalloc(sizeof(*img));
	img->name = xstrdup(name);
	img->dir = absolute(dir);
	img->kernel = xasprintf("%s/%s", img->dir, KERNEL_FILE);
	img->initrd = xasprintf("%s/%s", img->dir, INITRD_FILE);
	v = json_object_get(m, "kernel_version");
	if (!json_is_string(v) || !version_ok(json_string_value(v))) {
		r = corrupt(err, name, dir, "manifest has no valid kernel_version");
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
	files = json_object_get(m, "files");
	if (!json_is_object(files)) {
		r = corrupt(err, name, dir, "manifest has no files");
		goto fail;
	}
	if ((r = check_file(name, dir, files, KERNEL_FILE, ELFMAG, &img->kernel_size, err)) < 0 ||
	    (r = check_file(name, dir, files, INITRD_FILE, "070701", &img->initrd_size, err)) < 0)
		goto fail;
	json_decref(m);
	*out = img;
	return 0;
fail:
	json_decref(m);
	lg_image_free(img);
	return r;
}

int lg_image_verify(const char *name, struct lg_err **err)
{
	static const char *const files[] = {KERNEL_FILE, INITRD_FILE};
	struct lg_image *img = NULL;
	cleanup_free char *mpath = NULL;
	json_t *m;
	int r;

	if ((r = lg_image_open(name, &img, err)) < 0)
		return r;
	mpath = xasprintf("%s/%s", img->dir, MANIFEST_FILE);
	m = json_load_file(mpath, 0, NULL);
	if (m == NULL) {
		r = corrupt(err, name, img->dir, "manifest.json changed while being checked");
		lg_image_free(img);
		return r;
	}
	for (size_t i = 0; r == 0 && i < ARRAY_SIZE(files); i++) {
		cleanup_free char *path = xasprintf("%s/%s", img->dir, files[i]);
		const char *want = json_string_value(json_object_get(
		    json_object_get(json_object_get(m, "files"), files[i]), "sha256"));
		char hex[LG_SHA256_HEX_LEN + 1];

		if ((r = lg_sha256_file(path, hex, err)) < 0)
			break;
		if (want == NULL || strcmp(hex, want) != 0)
			r = corrupt(err, name, img->dir, "%s has SHA-256 %s, the manifest says %s",
				    files[i], hex, want ? want : "nothing");
	}
	json_decref(m);
	lg_image_free(img);
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
