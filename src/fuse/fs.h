/*
 * The FUSE adapter: the operations table that maps kernel requests onto the
 * catalog, the spool and the engine. It holds no state of its own beyond
 * open-file handles; everything lives in struct tusfs.
 */
#ifndef TUSFS_FS_H
#define TUSFS_FS_H

#include "core/catalog.h"
#include "core/engine.h"
#include "core/journal.h"
#include "core/poller.h"
#include "core/spool.h"
#include "tus/tus.h"

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

/* Extended attributes: their names and words are in core/attrs.h, shared
 * with the subcommands. */

/* Largest write the kernel is asked to send at once. */
#define FS_MAX_WRITE (1024 * 1024)

#endif
