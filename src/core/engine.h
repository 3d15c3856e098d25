/*
 * The upload engine: a fixed pool of worker threads (max_uploads), each with
 * its own HTTP connection, that moves spooled bytes to the TUS server. FUSE
 * threads never wait on it except in fsync: they record what changed in the
 * node and call engine_kick().
 */
#ifndef TUSFS_ENGINE_H
#define TUSFS_ENGINE_H

#include "core/catalog.h"
#include "core/transport.h"
#include "core/journal.h"
#include "core/poller.h"
#include "core/spool.h"
#include "tus/tus.h"

struct engine_config {
	/* The creation URL. */
	const char *endpoint;
	/* What OPTIONS said at mount. */
	struct tus_server server;
	uint64_t chunk_size;
	unsigned workers;
	/* Upload-Metadata "language", or NULL for automatic. */
	const char *language;
	/* Makes each worker's transport; must outlive engine_start(). */
	struct transport_factory transport;
	/* Where upload state is persisted; may be NULL (tests). */
	struct journal *journal;
	/* Bytes of completed files' spools kept for reading back. */
	uint64_t cache_size;
	/* Told when an upload completes or starts over; may be NULL. */
	struct poller *poller;
	/* Temporary-name patterns (catalog_temp_name); NULL for none. */
	const char *temp_names;
	/* How long the answer to the request carrying an upload's last
	 * byte may take once it is sent (the service decodes the file
	 * first); 0: the stall timeout. */
	long answer_timeout_s;
	/* Bytes per second for all uploads together (-o max_rate); 0:
	 * none. */
	uint64_t max_rate;
	/* Told (catalog lock held) when a 413 taught that the endpoint
	 * takes request bodies of at most max_body bytes; may be NULL. */
	void (*learned)(void *arg, uint64_t max_body);
	void *learned_arg;
};

/* The smallest request body a 413 shrinks chunks to; one refused at this
 * size fails the file. */
#define ENGINE_MIN_BODY (64 * 1024)

struct engine;

/* Changes the bandwidth limit (bytes per second, 0: none) at once, for
 * the requests in flight too. Any thread; no lock needed. */
void engine_set_rate(struct engine *e, uint64_t rate);
uint64_t engine_rate(const struct engine *e);

/* endpoint and language are copied. NULL with *err set on failure. */
struct engine *engine_create(const struct engine_config *cfg,
			     struct catalog *cat, struct spool *spool,
			     int *err);

/* Starts the workers (after fuse_daemonize: fork keeps no threads). */
int engine_start(struct engine *e) WARN_UNUSED;

/* Aborts requests in flight and joins the workers. */
void engine_stop(struct engine *e);

void engine_free(struct engine *e);

/*
 * Tells the engine that n may have work (a chunk filled up, the last writer
 * closed, an fsync, an unlink, a rewrite). Catalog lock held.
 */
void engine_kick(struct engine *e, struct node *n);

/*
 * n was created or renamed. A temporary name holds it back; a final name
 * lets it go (streaming starts at once, even if a writer still has it
 * open). A pending upload renamed to a temporary name is stopped: it is
 * terminated on the server and will start over, with a new taskId, under
 * its next final name. A complete upload is left alone. Lock held.
 */
void engine_renamed(struct engine *e, struct node *n);

/*
 * Starts a new upload generation for n (first write, O_TRUNC): a fresh
 * taskId and, when an earlier upload exists, a restart; a request in
 * flight for the old one is aborted. Catalog lock held. 0 or -errno.
 */
int engine_new_upload(struct engine *e, struct node *n) WARN_UNUSED;

/*
 * Pauses or resumes n's upload (`tusfs pause`, journaled): a paused file
 * sends nothing, and a request in flight is aborted; the resume goes on
 * from the server's offset. Catalog lock held.
 */
void engine_pause(struct engine *e, struct node *n, bool paused);

/*
 * After journal_load, before engine_start: queues every restored upload
 * that is not finished, and puts completed files' spools in the cache.
 */
void engine_resume(struct engine *e);

/* One fsync's wait, across its calls to engine_wait_confirmed. */
struct engine_sync {
	/* Bytes to be confirmed: the size when fsync began. */
	uint64_t target;
	/* CLOCK_MONOTONIC, set by the first call; zero before. */
	struct timespec since;
	/* The watchdog has spoken for this wait. */
	bool warned;
};

/*
 * fsync: blocks until the server has confirmed the first s->target bytes
 * of n (or all of it, if it shrank meanwhile): 0. Also returns 0 when n
 * was unlinked; -EIO when its upload failed or the engine stopped;
 * -EAGAIN at deadline (CLOCK_MONOTONIC), so the caller can check for an
 * interrupt or a shutdown and wait again. A wait longer than the stall
 * timeout with no request for n in flight is logged once. Catalog lock
 * held on entry and exit.
 */
int engine_wait_confirmed(struct engine *e, struct node *n,
			  struct engine_sync *s,
			  const struct timespec *deadline);

/*
 * Debug builds: aborts, saying why, if n has bytes to send that no worker
 * holds, is queued for, or will be woken for (the state of the fsync hang
 * of issue 17). Nothing in release builds. Catalog lock held.
 */
void engine_check(const struct engine *e, const struct node *n);

/*
 * Releases the spools of every completed file (the disk is full). Returns
 * how many went. Catalog lock held.
 */
int engine_release_cache(struct engine *e);

/* Whether the server can confirm bytes of a file still open for writing. */
bool engine_can_sync_open(const struct engine *e);

#endif
