/*
 * A file's upload: where it stands, what the server holds, and every
 * transition between states that is not a request. fs.c, the journal and
 * the engine change an upload through these transitions; only the engine's
 * request outcomes (engine.c) write the rest. The engine's queue and its
 * completed-spool cache keep their links here, embedded because a file is
 * on each at most once (docs/ARCHITECTURE.md, decisions).
 *
 * Events, and what each does to an upload in any state (the states are
 * enum upload_state's):
 *
 *   event                              effect
 *   bytes written past the end         none here; the engine is kicked and
 *                                      sends what plan_next() allows
 *   bytes rewritten, or the file cut,  restart (UPLOADED refuses both with
 *     below sent_mark                  EPERM: a finished upload is immutable)
 *   any content change                 the fingerprint is void
 *   new generation: create, O_TRUNC,   QUEUED, a new taskId, no error; the
 *     truncate to 0, a changed spool   request in flight is aborted; a copy
 *     found at mount                   on the server is replaced, or kept
 *                                      if complete
 *   a rewrite found by a worker        a new taskId (upload_new_task)
 *   request outcomes                   engine.c's table: UPLOADING, RETRYING,
 *                                      UPLOADED, FAILED or restart
 *
 * restart: the worker drops the server's copy (DELETE, unless it is
 * complete and this is a new generation) and uploads the spool afresh.
 * Once final_sent is set (journaled before the last byte goes) the upload
 * is never sent again; the task decides how it went (engine.c).
 */
#ifndef TUSFS_UPLOAD_H
#define TUSFS_UPLOAD_H

#include "core/meta.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

struct node;
struct spool_stream;

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

/*
 * What the answer to the request carrying an upload's last byte said. The
 * service completes an upload inside that request (BACKEND.md 1b): it
 * checks the file, moves it away (HEAD and PATCH then answer 404) and
 * decodes it before it answers, so only a 2xx says for sure that a task
 * was started, and only a refusal (4xx, 500) for an upload that HEAD
 * shows complete says for sure that none will be.
 */
enum final_answer {
	FINAL_UNSEEN,	/* none yet, or lost: timeout, 502-504, 524, crash */
	FINAL_ACCEPTED, /* 2xx: the server completed the upload */
	FINAL_REFUSED,	/* 4xx or a malformed answer: final unless complete */
	FINAL_ERROR,	/* 500: retried unless HEAD shows it complete */
};

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
	/* A temporary name (catalog_temp_name): nothing goes to the server
	 * until a rename gives the file a final name. */
	bool hold;
	/* The server's copy is stale (rewritten, truncated): start over. */
	bool restart;
	/* The restart is a new version (O_TRUNC): keep a complete old one. */
	bool new_generation;
	/* The offset must be re-read with HEAD before the next PATCH. */
	bool need_head;
	/* The request carrying the last byte may have gone (journaled before
	 * it goes): from then on a 404 means the service took the upload,
	 * and the task, not HEAD, says how it went. */
	bool final_sent;
	/* What that request's answer said (not journaled: after a restart it
	 * is unseen). */
	enum final_answer final_answer;
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
	/* The fingerprint of the writes so far, while they came front to
	 * back one at a time; stream_gen is content_gen after the last one
	 * fed. NULL otherwise (the worker then reads the spool). */
	struct spool_stream *stream;
	uint64_t stream_gen;
	/* Writes between their two locked sections (fs.c), which hash
	 * outside the lock: only a write with none beside it may start a
	 * stream. */
	unsigned writing;
	/* The URL is in the journal on disk, so PATCHes may go. */
	bool url_durable;
	/* Complete, with its spool (cache_len bytes) kept as cache (the
	 * engine's LRU list). */
	bool cached;
	uint64_t cache_len;
	struct node *cprev, *cnext;
	/* The request in flight: the offset it started at, when, and the
	 * body bytes handed to the transport so far (read without the lock),
	 * for the rate and ETA in NAME.status; rate is the last request's. */
	uint64_t req_base;
	struct timespec req_start;
	atomic_uint_fast64_t wire;
	double rate;
};

/* A new upload's fields: nothing sent, no length declared. */
void upload_init(struct upload *up);

/* The server has the whole upload: its length is declared and every byte
 * confirmed. */
bool upload_complete(const struct upload *up);

/*
 * The file's bytes from off on are about to change. Bytes the server may
 * hold (below sent_mark) make the upload restart; a fingerprint is void;
 * a fingerprint being taken right now is not kept. Returns true when this
 * voids something the journal may vouch for on disk (a fingerprint, or
 * sent bytes not yet marked for restart): the caller syncs the journal
 * before writing.
 */
bool upload_content_changing(struct upload *up, uint64_t off);

/*
 * Bytes from off on changed while the lock was dropped. Returns true when
 * a worker sent some of them meanwhile, so the upload now restarts.
 */
bool upload_overtaken(struct upload *up, uint64_t off);

/* The file was cut to size bytes. */
void upload_truncated(struct upload *up, uint64_t size);

/*
 * A new version of the file (O_TRUNC, a first write, a crash that kept a
 * changed spool): a fresh taskId, no fingerprint, no error, no retry
 * pending, the request in flight aborted, and, when the server has an
 * earlier upload, a restart that keeps that one if it is complete. 0, or -errno
 * when no taskId could be made (the rest is done, and the upload goes without
 * one).
 */
int upload_new_generation(struct upload *up);

/* A fresh taskId for an upload that starts over with other bytes. 0 or
 * -errno. */
int upload_new_task(struct upload *up);

#endif
