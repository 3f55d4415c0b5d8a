/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The environment, read once.  Every variable the host program reads is a
 * field here, parsed and validated by lg_env_load(), which main() calls
 * first, before any thread starts; nothing else in src/ reads the
 * environment (tests/unit/no-getenv.sh keeps it so).  A bad value gives the default and
 * one warning line, which lg_log_init() logs ("LUMINAGUARD_BOOT_TIMEOUT=`0`
 * is not 1..3600 seconds; using 120"): the program never fails for its
 * environment.  The guest agent (guest/) is a separate program
 * and reads its own.
 *
 * Programs without our main() (unit tests, fuzzers) need not call
 * lg_env_load(): the first lg_env() loads it (once, thread-safe).
 */
#ifndef LG_COMMON_ENV_H
#define LG_COMMON_ENV_H

#include "common/log.h"

#include <stdbool.h>
#include <stdint.h>

/* A VM that has not said hello within this long failed to boot. */
#define LG_ENV_BOOT_TIMEOUT_DEFAULT_S 120
#define LG_ENV_BOOT_TIMEOUT_MAX_S     3600

/* Searched when PATH is unset or empty (sbin too: debootstrap lives there). */
#define LG_ENV_DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/*
 * Strings are copies owned by this module, valid for the life of the
 * program (until lg_env_reload()); NULL means "not set" and an empty value
 * counts as not set.
 */
struct lg_env {
	/* LUMINAGUARD_HOME: the data directory (images, kernels, sockets,
	 * audit log).  Default (NULL): $XDG_DATA_HOME/luminaguard, else
	 * $HOME/.local/share/luminaguard (see common/paths.h). */
	const char *home;
	/* XDG_DATA_HOME, only when absolute (the XDG spec says a relative one
	 * is ignored).  Default NULL. */
	const char *xdg_data_home;
	/* HOME, only when absolute.  Default NULL: the passwd entry's. */
	const char *user_home;
	/* LUMINAGUARD_LIBEXEC: where helpers (lg-agent, lg-jail...) are looked
	 * for first.  Default NULL: next to the executable. */
	const char *libexec;
	/* LUMINAGUARD_LOG=error|warn|info|debug: the log level.  Default warn
	 * (log_level_set false; `serve` then raises it to info). */
	enum lg_log_level log_level;
	bool log_level_set;
	/* LUMINAGUARD_LOG_FORMAT=json|text: log lines as JSON objects.  Default
	 * text. */
	bool log_json;
	/* LUMINAGUARD_CONTROL_SOCKET: the approval control socket `luminaguard
	 * approvals` talks to.  Default NULL: the approval module's own. */
	const char *control_socket;
	/* LUMINAGUARD_QEMU: the QEMU binary.  Default NULL: qemu-system-x86_64
	 * on path. */
	const char *qemu;
	/* PATH, where programs (qemu, debootstrap) are found.  Never NULL:
	 * LG_ENV_DEFAULT_PATH when unset or empty. */
	const char *path;
	/* LUMINAGUARD_BOOT_TIMEOUT: seconds, 1..LG_ENV_BOOT_TIMEOUT_MAX_S, a VM
	 * has to boot, here in milliseconds.  Default
	 * LG_ENV_BOOT_TIMEOUT_DEFAULT_S; boot_timeout_set says whether the
	 * variable gave it. */
	int boot_timeout_ms;
	bool boot_timeout_set;
	/* SOURCE_DATE_EPOCH: seconds, 0..INT32_MAX, the time written into
	 * image manifests (reproducible builds).  Default -1: now. */
	int64_t source_date_epoch;
};

/*
 * Reads and validates the environment, once (later calls do nothing).
 * Call before any thread starts, or let lg_env() do it.
 */
void lg_env_load(void);

/* The environment as loaded (loading it first if need be).  Never NULL. */
const struct lg_env *lg_env(void);

/*
 * One line per variable with a bad value ("LUMINAGUARD_LOG=`loud` is not
 * error, warn, info or debug; using warn"), NULL-terminated: lg_log_init()
 * logs them, in the format the environment asked for.
 */
const char *const *lg_env_warnings(void);

/*
 * FOR TESTS ONLY: reads the environment again after the test changed it
 * with setenv()/unsetenv().  Strings from an earlier lg_env() are freed:
 * no other thread may be running, and no caller may hold one.
 */
void lg_env_reload(void);

#endif
