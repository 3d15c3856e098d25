/*
 * The spool: one local file per media file, named by its inode number,
 * under STATE_DIR/spool. Written by FUSE threads, read by upload workers,
 * kept until its upload is complete (or its node is gone).
 */
#ifndef TUSFS_SPOOL_H
#define TUSFS_SPOOL_H

#include "tusfs_setup.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/statvfs.h>
#include <sys/types.h>

struct spool;

/*
 * Opens (creating, mode 0700) dir/spool. dir itself, the state directory,
 * is made private: a loose mode is set to 0700 (and logged), another
 * user's directory is refused (-EPERM). *max_id is set to the highest file
 * id already there (0 if none), so new ids never reuse a leftover file.
 */
struct spool *spool_open_dir(const char *dir, uint64_t *max_id, int *err);
void spool_free(struct spool *s);

/* Opens file id with open(2) flags (O_CREAT gives mode 0600). fd or -errno. */
int spool_open(struct spool *s, uint64_t id, int flags) WARN_UNUSED;

/* Removes file id; a missing file is not an error. */
int spool_remove(struct spool *s, uint64_t id);

/* Size of file id, or -errno (-ENOENT if there is none). */
int64_t spool_size(struct spool *s, uint64_t id);

/*
 * Removes every spool file whose id keep() refuses (files no entry owns
 * after a crash). Returns how many went, or -errno.
 */
int spool_sweep(struct spool *s, bool (*keep)(uint64_t id, void *arg),
		void *arg);

/*
 * xxh3 of the first len bytes of file id into *hash. -EIO if the file is
 * shorter, -ECANCELED once *cancel is set, or -errno.
 */
int spool_hash(struct spool *s, uint64_t id, uint64_t len, uint64_t *hash,
	       const atomic_int *cancel);

/*
 * A running xxh3: the fingerprint of a spool fed by its writes as they
 * land, front to back, so that sealing it needs no second read. The
 * caller decides which writes continue the stream (spool_hash's result
 * for the same bytes is the same).
 */
struct spool_stream;

/* A stream of 0 bytes, or NULL when out of memory. */
struct spool_stream *spool_stream_new(void);
/* Appends buf to the bytes hashed. 0, or -EINVAL (the stream is then
 * unusable). */
int spool_stream_feed(struct spool_stream *s, const void *buf, size_t n);
/* Bytes fed so far. */
uint64_t spool_stream_len(const struct spool_stream *s);
/* xxh3 of the bytes fed so far. */
uint64_t spool_stream_digest(const struct spool_stream *s);
void spool_stream_free(struct spool_stream *s);

/* Writes all of buf at off, retrying short writes. 0 or -errno. */
int spool_pwrite(int fd, const void *buf, size_t n, off_t off) WARN_UNUSED;

/* statvfs of the spool's filesystem. */
int spool_statfs(struct spool *s, struct statvfs *st);

#endif
