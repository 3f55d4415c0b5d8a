/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reader and extractor for plain (uncompressed) tar archives, the input of
 * `image import NAME ROOTFS.tar`.  The archive is hostile: it comes from
 * whoever built the root file system.
 *
 * Formats: ustar (name + prefix), GNU ('L' long names, 'K' long link
 * names), pax ('x' records path, linkpath, size, uid, gid, mtime; 'g' global
 * headers are read and ignored), v7 headers; numbers in octal or base-256.
 * Every header's checksum is verified; two zero blocks end the archive and
 * anything after them is ignored; EOF before them is an error (truncated).
 * GNU sparse entries ('S', and pax GNU.sparse.*) and multi-volume entries
 * are refused: a root file system has no need of them, and expanding a
 * sparse map is more hostile-input surface for no gain.
 *
 * Bounds: a name or link name is at most LG_TAR_NAME_MAX bytes, a pax
 * header at most LG_TAR_PAX_MAX, and the metadata before one entry ('L',
 * 'K', 'x', 'g' headers) at most LG_TAR_META_MAX bytes in LG_TAR_META_HDRS
 * headers; past any of them the archive is refused.
 */
#ifndef LG_IMAGE_TAR_H
#define LG_IMAGE_TAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct lg_err;

#define LG_TAR_NAME_MAX	 4096
#define LG_TAR_PAX_MAX	 (64 * 1024)
#define LG_TAR_META_MAX	 (256 * 1024)
#define LG_TAR_META_HDRS 16

/* Extraction defaults, used where lg_tar_opts leaves 0. */
#define LG_TAR_DEFAULT_MAX_BYTES   (8ull << 30)
#define LG_TAR_DEFAULT_MAX_ENTRIES 1000000ull

enum lg_tar_type {
	LG_TAR_FILE,
	LG_TAR_DIR,
	LG_TAR_SYMLINK,
	LG_TAR_HARDLINK,
	LG_TAR_OTHER, /* character and block devices, fifos */
};

struct lg_tar_entry {
	const char *path;     /* as stored: no NUL inside, at most LG_TAR_NAME_MAX */
	const char *linkname; /* symlink or hard link target; "" for other types */
	enum lg_tar_type type;
	uint32_t mode; /* permission bits only (07777) */
	uint64_t uid, gid;
	uint64_t mtime; /* seconds since the epoch (pax fractions dropped) */
	uint64_t size;	/* data bytes that follow (0 for every type but LG_TAR_FILE) */
};

/* Reads up to n bytes: returns the count, 0 at EOF, or -errno. */
typedef ssize_t (*lg_tar_read_fn)(void *ctx, void *buf, size_t n);

struct lg_tar_reader;

/* A reader pulling bytes from read(ctx, ...).  Does not take ownership of ctx. */
struct lg_tar_reader *lg_tar_reader_new(lg_tar_read_fn read, void *ctx);
void lg_tar_reader_free(struct lg_tar_reader *r);

/*
 * Skips what is left of the current entry's data and parses the next
 * entry into *e, whose strings belong to the reader and stay valid until
 * the next call.  Returns 1 for an entry, 0 at the end of the archive, or
 * negative with *err set (one line, naming the archive offset).
 */
int lg_tar_next(struct lg_tar_reader *r, struct lg_tar_entry *e, struct lg_err **err);

/*
 * Reads up to n bytes of the current entry's data: returns the count, 0
 * when the entry's data is done, or negative with *err set (truncated).
 */
ssize_t lg_tar_read_data(struct lg_tar_reader *r, void *buf, size_t n, struct lg_err **err);

/* Bytes consumed from the input so far. */
uint64_t lg_tar_offset(const struct lg_tar_reader *r);

struct lg_tar_opts {
	uint64_t max_total_bytes; /* sum of file sizes; 0: LG_TAR_DEFAULT_MAX_BYTES */
	uint64_t max_entries;	  /* 0: LG_TAR_DEFAULT_MAX_ENTRIES */
	bool keep_setid;	  /* keep setuid/setgid bits (default: cleared, counted) */
	bool keep_owners;	  /* apply uid/gid; only honoured when running as root */
	bool no_openat2;	  /* tests: resolve paths with the fallback walk */
};

struct lg_tar_stats {
	uint64_t entries; /* every entry read, skipped ones included */
	uint64_t files, dirs, symlinks, hardlinks;
	uint64_t bytes;		  /* file data written */
	uint64_t skipped_special; /* device nodes and fifos, not created */
	uint64_t setid_cleared;	  /* entries whose setuid/setgid bits were dropped */
	bool owners_applied;	  /* false: all files belong to the extracting user */
};

/*
 * Extracts the tar archive read from in_fd into dest_dir, which must exist
 * and be empty.  Nothing is ever created, changed or followed outside
 * dest_dir:
 *  - every path is resolved relative to a descriptor of dest_dir with
 *    openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS), so a symlink made by
 *    an earlier entry can neither lead out (absolute or `..` targets fail)
 *    nor be followed through /proc; where openat2 is missing (ENOSYS) the
 *    path is walked one component at a time with O_NOFOLLOW | O_DIRECTORY,
 *    which follows no symlink at all;
 *  - leading slashes are stripped (as tar does: "/etc/x" is dest/etc/x);
 *    a `..` component anywhere refuses the archive;
 *  - the last component is never followed: a later entry with the same
 *    name unlinks what is there and creates anew (an existing directory is
 *    kept for a directory entry and refused for any other type);
 *  - a hard link's target must be a regular file already extracted;
 *  - devices and fifos are skipped and counted (the guest's /dev is a
 *    devtmpfs); setuid/setgid bits are cleared unless opts->keep_setid;
 *    owners are applied only with opts->keep_owners when running as root,
 *    otherwise the tree is single-user (stats->owners_applied false);
 *  - file data above opts->max_total_bytes, or entries above
 *    opts->max_entries, refuse the archive.
 * Modification times are applied (access time = mtime).  Directory modes
 * and times are set once everything is extracted (deepest first), so a
 * read-only directory in the archive can still be filled.
 *
 * opts and stats may be NULL.  Returns 0, or negative with *err set to one
 * line naming the entry (sanitized).  On failure dest_dir is left partly
 * filled: the caller removes it (lg_rm_rf).  Does not take ownership of
 * in_fd.
 */
int lg_tar_extract(int in_fd, const char *dest_dir, const struct lg_tar_opts *opts,
		   struct lg_tar_stats *stats, struct lg_err **err);

#endif
