/*
 * The FUSE adapter: the operations table that maps kernel requests onto the
 * catalog, the spool and the engine. It holds no state of its own beyond
 * open-file handles; everything lives in struct tusfs.
 */
#ifndef TUSFS_FS_H
#define TUSFS_FS_H

#include "tusfs/catalog.h"
#include "tusfs/engine.h"
#include "tusfs/journal.h"
#include "tusfs/poller.h"
#include "tusfs/spool.h"
#include "tusfs/tus.h"

#include <stdbool.h>
#include <stdint.h>

/* One mounted filesystem; passed to fuse_new() as private data. */
struct tusfs {
	struct catalog *cat;
	struct spool *spool;
	struct engine *engine;
	struct journal *journal;
	struct poller *poller;
	struct tus_server server;
	uint64_t chunk_size;
	/* fsync only syncs the spool (-o fsync=local). */
	bool fsync_local;
	/* Directory levels allowed below the root (-o max_depth). */
	unsigned max_depth;
};

struct fuse_operations;

const struct fuse_operations *fs_operations(void);

/* Extended attributes: user.tusfs.{state,progress,url,task_id,error,
 * transcription} on files, user.tusfs.version on the root (it marks a
 * tusfs mount). */
#define FS_XATTR_PREFIX "user.tusfs."
#define FS_XATTR_MAX	(8192 + 64)

/* Largest write the kernel is asked to send at once. */
#define FS_MAX_WRITE (1024 * 1024)

#endif
