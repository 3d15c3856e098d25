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
 * Opens (creating, mode 0700) dir/spool. *max_id is set to the highest file
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

/* Writes all of buf at off, retrying short writes. 0 or -errno. */
int spool_pwrite(int fd, const void *buf, size_t n, off_t off) WARN_UNUSED;

/* statvfs of the spool's filesystem. */
int spool_statfs(struct spool *s, struct statvfs *st);

#endif
