/*
 * The journal: crash-safe persistence of the catalog. Each node has one
 * record file, STATE/journal/<ino>, holding two checksummed (xxh3) copies
 * of its record. The first is created atomically (write a temporary,
 * fdatasync, rename, fsync the directory); later changes overwrite the
 * older copy in place and fdatasync it, so the latest durable copy is never
 * the one being written and a torn write costs only that change.
 *
 * Changes are marked under the catalog lock and written by one journal
 * thread, which batches whatever is dirty; callers that promise durability
 * (the engine before the first PATCH of an upload, fsync(2)) wait for their
 * change to reach the disk. At mount, journal_load() rebuilds the tree.
 */
#ifndef TUSFS_JOURNAL_H
#define TUSFS_JOURNAL_H

#include "core/catalog.h"
#include "core/spool.h"

#include <stddef.h>
#include <stdint.h>

/* One decoded record: everything about a node that survives a remount. */
struct journal_entry {
	uint64_t ino;
	uint64_t parent;
	/* Order of changes: where two records claim one name, the later won. */
	uint64_t seq;
	uint32_t mode, uid, gid;
	struct timespec atime, mtime, ctime;
	char *name;
	/* Regular files. */
	uint64_t size;
	bool fp_valid;
	uint64_t fp_size, fp_hash;
	char *url;
	uint64_t offset;
	int64_t declared_length;
	char task_id[META_UUID_LEN + 1];
	uint32_t state; /* enum upload_state */
	bool restart, new_generation, final_sent;
	/* Files and folders. */
	bool paused;
	char *message;
	/* The transcription (struct transcription's lasting part). */
	uint32_t tr_state; /* enum tr_state */
	char tr_stage[32];
	int32_t tr_percent;
	struct timespec tr_since, tr_done;
	uint64_t tr_sizes[4];
	char *tr_error;
	/* Not part of the record: where the load found it (1 + its slot). */
	unsigned char copy;
};

/* Inode numbers above this are refused (the counter must not wrap). */
#define JOURNAL_MAX_INO CATALOG_MAX_INO

/* Largest record accepted; real ones are well under a kilobyte. */
#define JOURNAL_MAX_RECORD (64 * 1024)

/* Serializes e into a malloc'd buffer. 0 or -ENOMEM/-EINVAL. */
int journal_encode(const struct journal_entry *e, char **buf, size_t *len);

/*
 * Parses and checks a record. 0, or -EBADMSG for anything torn, damaged or
 * out of range (e is then left empty). Safe on arbitrary bytes.
 */
int journal_decode(const void *buf, size_t len, struct journal_entry *e);

/*
 * Decodes a whole record file of len bytes (both copies) for node ino into
 * e: the valid copy with the higher seq, e->copy saying which. 0, -EBADMSG
 * when neither copy is valid for ino, -ENOMEM. Safe on arbitrary bytes.
 */
int journal_decode_file(const char *buf, size_t len, uint64_t ino,
			struct journal_entry *e);

/* Frees the strings of e and zeroes it. */
void journal_entry_clear(struct journal_entry *e);

struct journal;

/* What journal_load found, for the mount's log line. */
struct journal_stats {
	unsigned restored;
	unsigned damaged;
	unsigned orphans;
};

/*
 * Opens (creating, mode 0700) STATE/journal. NULL with *err set on failure.
 * cat's lock guards every field the journal reads.
 */
struct journal *journal_open(const char *state_dir, struct catalog *cat,
			     int *err);

/*
 * Rebuilds cat from the records, before the mount. Damaged records are
 * reported and skipped (their spool files kept); entries whose parent is
 * gone are adopted by /lost+found; spool files that belong to no record are
 * removed. The next inode number is set past every one in use.
 */
int journal_load(struct journal *j, struct spool *spool,
		 struct journal_stats *stats);

/* Starts the writer thread (after fuse_daemonize). */
int journal_start(struct journal *j) WARN_UNUSED;

/* Writes everything still dirty and joins the thread. */
void journal_stop(struct journal *j);

void journal_free(struct journal *j);

/* Notes that n changed (or went away) and must be persisted. Lock held;
 * j may be NULL. */
void journal_mark(struct journal *j, struct node *n);

/*
 * Waits until n's latest marked change is on disk. Lock held (released
 * while waiting). 0, or the -errno of the failed write.
 */
int journal_wait(struct journal *j, struct node *n);

/* Whether n has changes not yet on disk. Lock held. */
bool journal_pending(const struct journal *j, const struct node *n);

/* journal_mark() then journal_wait(). */
int journal_sync(struct journal *j, struct node *n);

#endif
