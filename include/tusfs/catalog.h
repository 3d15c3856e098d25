/*
 * The namespace: a tree of directories and media files with their
 * attributes and per-file upload state. The catalog owns the nodes and one
 * mutex that protects every field below (the tree, attributes, upload
 * state); critical sections are short and never do I/O. The engine's
 * condition variables use the same mutex.
 *
 * Node lifetime is reference counted: the tree holds one reference, each
 * open handle one, and the engine one while the node is queued or being
 * uploaded. When the count drops to 0 the free hook runs (it removes the
 * spool file) and the node is freed.
 */
#ifndef TUSFS_CATALOG_H
#define TUSFS_CATALOG_H

#include "tusfs/meta.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

#define CATALOG_ROOT_INO 1

/* Where a file's upload stands, as the status sidecar will show it. */
enum upload_state {
	UPLOAD_QUEUED,	  /* spooled, waiting for data, a close or a worker */
	UPLOAD_UPLOADING, /* a worker is sending it */
	UPLOAD_RETRYING,  /* a transient failure; waiting to try again */
	UPLOAD_UPLOADED,  /* the server has every byte and the length */
	UPLOAD_FAILED,	  /* refused for good; the spool is kept */
	UPLOAD_EMPTY,	  /* zero bytes: kept locally, never uploaded */
};

const char *upload_state_name(enum upload_state s);

struct upload {
	enum upload_state state;
	/* Absolute upload URL, NULL until created. */
	char *url;
	/* Bytes the server confirmed. */
	uint64_t offset;
	/* Start of the bytes that may be on the wire: a write below it must
	 * restart the upload. */
	uint64_t sent_mark;
	/* Upload-Length the server knows, or TUS_LENGTH_UNKNOWN. */
	int64_t declared_length;
	/* fsync asks for this many bytes confirmed. */
	uint64_t sync_target;
	char task_id[META_UUID_LEN + 1];
	/* The server's copy is stale (rewritten, truncated): start over. */
	bool restart;
	/* The restart is a new version (O_TRUNC): keep a complete old one. */
	bool new_generation;
	/* The offset must be re-read with HEAD before the next PATCH. */
	bool need_head;
	/* In the engine's queue / held by a worker. */
	bool queued;
	bool active;
	/* New work arrived while a worker held it. */
	bool kicked;
	/* Sticky error (-errno) reported by flush and fsync, 0 if none. */
	int err;
	/* Last error in words (server's message included), or NULL. */
	char *message;
	unsigned attempts;
	/* Monotonic time before which a retry must not start. */
	struct timespec not_before;
	/* Set to abort the request in flight (unlink, shutdown). */
	atomic_int cancel;
	/* Engine queue link. */
	struct node *qnext;
	/* xxh3 of the spool's first fp_size bytes, taken once sealed. */
	bool fp_valid;
	uint64_t fp_size;
	uint64_t fp_hash;
	/* Restored with a fingerprint: check the spool before sending. */
	bool verify;
	/* Bumped by every change to the spool's content. */
	uint64_t content_gen;
	/* The URL is in the journal on disk, so PATCHes may go. */
	bool url_durable;
	/* Complete, with its spool (cache_len bytes) kept as cache (the
	 * engine's LRU list). */
	bool cached;
	uint64_t cache_len;
	struct node *cprev, *cnext;
};

struct node {
	uint64_t ino;
	char *name;
	struct node *parent;
	/* Directory: first child; children are linked through next. */
	struct node *children;
	struct node *next;
	mode_t mode;
	uid_t uid;
	gid_t gid;
	struct timespec atime, mtime, ctime;
	unsigned refs;
	bool unlinked;
	/* Regular files only. */
	uint64_t size;
	unsigned opens;
	unsigned writers;
	struct upload up;
	/* Journal bookkeeping: the latest change's number, the result of the
	 * last write, and the dirty list link. */
	uint64_t jseq;
	int jerr;
	bool jdirty;
	struct node *jnext;
};

struct catalog;

typedef void catalog_free_fn(struct node *n, void *arg);

/*
 * Creates a catalog whose root directory belongs to uid/gid. free_fn runs
 * (with the lock held) for each file node whose last reference goes.
 */
struct catalog *catalog_create(uid_t uid, gid_t gid, uint64_t first_ino,
			       catalog_free_fn *free_fn, void *arg);
void catalog_free(struct catalog *cat);

pthread_mutex_t *catalog_mutex(struct catalog *cat);

/* Initialises a condition variable to wait with the catalog mutex; its
 * timed waits take CLOCK_MONOTONIC deadlines. */
void catalog_cond_init(pthread_cond_t *cv);
void catalog_lock(struct catalog *cat);
void catalog_unlock(struct catalog *cat);

/* The functions below need the lock held. */

struct node *catalog_root(struct catalog *cat);

/* Resolves an absolute path. 0, -ENOENT or -ENOTDIR. */
int catalog_lookup(struct catalog *cat, const char *path, struct node **out);

/* Finds name among dir's children, or NULL. */
struct node *catalog_child(const struct node *dir, const char *name);

/*
 * Resolves path's parent directory and points *name at its last component
 * (inside path). 0, -ENOENT, -ENOTDIR, or -EINVAL for the root.
 */
int catalog_lookup_parent(struct catalog *cat, const char *path,
			  struct node **parent, const char **name);

/*
 * Adds a node named name (copied) under dir with mode (S_IFREG or S_IFDIR
 * included), owned by uid/gid. -EEXIST if the name is taken, -ENOMEM.
 */
int catalog_add(struct catalog *cat, struct node *dir, const char *name,
		mode_t mode, uid_t uid, gid_t gid, struct node **out);

/*
 * Creates a detached node (for journal_load): inode ino, or a new one if 0.
 * Attach it with catalog_attach(). NULL on -ENOMEM.
 */
struct node *catalog_new_node(struct catalog *cat, uint64_t ino,
			      const char *name, mode_t mode, uid_t uid,
			      gid_t gid);

/* Links a detached node under dir. -EEXIST if its name is taken. */
int catalog_attach(struct node *dir, struct node *n);

/* Makes sure new inode numbers are above ino. */
void catalog_reserve_ino(struct catalog *cat, uint64_t ino);

/* Unlinks n from its directory, keeping the tree's reference (load). */
void catalog_detach(struct node *n);

/* Frees a detached node that never joined the tree; no free hook runs. */
void catalog_discard(struct node *n);

/* Renames a detached node. -ENOMEM. */
int catalog_set_name(struct node *n, const char *name);

/* Detaches n from the tree and drops the tree's reference. */
void catalog_unlink(struct catalog *cat, struct node *n);

/*
 * Moves n to dir/name, detaching (and dropping) whatever had that name.
 * -ENOMEM; the caller checks types and emptiness first.
 */
int catalog_rename(struct catalog *cat, struct node *n, struct node *dir,
		   const char *name);

void catalog_get(struct node *n);
void catalog_put(struct catalog *cat, struct node *n);

/*
 * Writes n's path relative to the root ("dir/sub/name") into buf.
 * Returns its length, or -ENAMETOOLONG.
 */
int catalog_relpath(const struct node *n, char *buf, size_t size);

/* Sets all three times of n to now. */
void catalog_touch(struct node *n);

#endif
