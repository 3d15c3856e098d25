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

#include "core/upload.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

struct spool_stream;

#define CATALOG_ROOT_INO 1
/* Inode numbers stay below this; the bits above it number sidecars. */
#define CATALOG_MAX_INO (1ULL << 56)

/* Where a file's transcription stands, as the poller last saw it. */
enum tr_state {
	TR_NONE,       /* the upload is not complete (or transcripts off) */
	TR_QUEUED,     /* uploaded; the server has no task for it yet */
	TR_PROCESSING, /* the server is transcribing */
	TR_COMPLETED,  /* done; the transcripts are in the state directory */
	TR_FAILED,     /* the server gave up; error says why */
	TR_MISSING,    /* the task never appeared, or vanished */
	/* The last byte was sent but its answer never came (a timeout, a
	 * crash, a 404: the service took the file): its task decides. */
	TR_STARTING,
};

const char *tr_state_name(enum tr_state s);

/* A file's transcription; the poller's fields are its own business. */
struct transcription {
	enum tr_state state;
	char stage[32];	  /* progress_stage, "" when unknown */
	int percent;	  /* progress_percentage, -1 when unknown */
	char *error;	  /* the server's message for a failed task */
	char *poll_error; /* what went wrong with the last poll, or NULL */
	/* CLOCK_REALTIME: when the upload completed (the wait for the task
	 * counts from there) and when the transcripts were stored. */
	struct timespec since, done_at;
	/* Bytes of each stored transcript (enum render_format order). */
	uint64_t sizes[4];
	/* Poller: on its list, a poll in flight, when the next is due
	 * (CLOCK_MONOTONIC), the current backoff, the list link. */
	bool listed;
	bool busy;
	struct timespec due, last_poll;
	unsigned interval_ms;
	struct node *pnext;
};

struct node {
	uint64_t ino;
	char *name;
	struct node *parent;
	/* Directory: first child; children are linked through next (and
	 * prev, so one leaves in O(1)). */
	struct node *children;
	struct node *next, *prev;
	/* Directory: its children by name, a power-of-two table of chains
	 * through hnext (NULL while none could be allocated: lookups then
	 * walk the list), and how many children it has. */
	struct node **hslots;
	size_t hsize, nchildren;
	struct node *hnext;
	/* `tusfs pause`: a file sends nothing (its request in flight is
	 * aborted) until resumed; a folder's new entries start paused. */
	bool paused;
	/* Directory: how many of its children are directories (its link
	 * count is 2 plus this, as find and rename's ".." expect). */
	unsigned subdirs;
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
	struct transcription tr;
	/* Journal bookkeeping: the latest change's number, the result of the
	 * last write, the dirty list link, and which copy in the record file
	 * is the latest (0: no record file yet; else 1 + its slot). */
	uint64_t jseq;
	int jerr;
	bool jdirty;
	struct node *jnext;
	unsigned char jcopy;
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

/* Longest path below the root an entry may have: it goes to the server
 * whole, as relativePath. */
#define CATALOG_MAX_RELPATH 4095

/*
 * Writes n's path relative to the root ("dir/sub/name") into buf.
 * Returns its length, or -ENAMETOOLONG.
 */
int catalog_relpath(const struct node *n, char *buf, size_t size);

/* The directory levels from the root down to dir (the root: 0). */
unsigned catalog_depth(const struct node *dir);

/*
 * What n brings wherever it goes: *levels, the directory levels it holds
 * (n included: 0 for a file), and *longest, the length of its longest path
 * from its own name down. Lock held.
 */
void catalog_extent(const struct node *n, unsigned *levels, size_t *longest);

/* Sets all three times of n to now. */
void catalog_touch(struct node *n);

/* Calls fn for every file below dir (every node that is not a folder),
 * depth first. fn must not add or remove nodes. Lock held. */
void catalog_each_file(struct node *dir, void (*fn)(struct node *, void *),
		       void *arg);

/*
 * Sidecars: NAME.status, NAME.txt, NAME.srt, NAME.vtt and NAME.json beside
 * each regular file NAME. They are not nodes; a name resolves to one when
 * no real entry has it.
 */
enum sidecar {
	SIDECAR_STATUS,
	SIDECAR_TXT, /* SIDECAR_TXT + f is render format f */
	SIDECAR_SRT,
	SIDECAR_VTT,
	SIDECAR_JSON,
	SIDECAR_COUNT
};

/* ".status", ".txt", ... */
const char *catalog_sidecar_suffix(enum sidecar k);

/* The stable inode number of file ino's sidecar k. */
static inline uint64_t catalog_sidecar_ino(uint64_t ino, enum sidecar k)
{
	return ino | ((uint64_t)(k + 1) << 56);
}

/*
 * If name is FILE.SUFFIX for a regular file FILE in dir, returns the
 * sidecar kind and sets *file; else -1. Only the first `kinds` kinds are
 * considered (1: .status alone, SIDECAR_COUNT: all).
 */
int catalog_sidecar(const struct node *dir, const char *name, int kinds,
		    struct node **file);

/*
 * Whether a regular file named name in dir would have a sidecar name that
 * a real entry other than except already has (among the first `kinds`).
 */
bool catalog_sidecar_taken(const struct node *dir, const char *name, int kinds,
			   const struct node *except);

/*
 * Whether name matches one of patterns: fnmatch(3) patterns separated by
 * '/' (see CONFIG_DEFAULT_TEMP_NAMES). Such temporary names are held back
 * from uploading until renamed to a final name.
 */
bool catalog_temp_name(const char *patterns, const char *name);

/* 0 if patterns is such a list (each non-empty, at most NAME_MAX bytes, no
 * trailing '/'; "" is the empty list), else -EINVAL. */
int catalog_temp_names_check(const char *patterns);

#endif
