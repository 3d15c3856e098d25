/*
 * The transcription poller: after a file's upload completes it asks the
 * service's task API how the transcription goes, with backoff, and stores
 * the finished transcripts (rendered once, as the sidecar files) in
 * STATE/transcripts/<ino>.<suffix>, so they outlive a remount and a server
 * that is down. A small fixed pool of threads, each with its own HTTP
 * connection, bounds the requests in flight.
 *
 * Everything it learns goes into the node's struct transcription under the
 * catalog lock and is journaled; the FUSE side only reads it.
 */
#ifndef TUSFS_POLLER_H
#define TUSFS_POLLER_H

#include "core/catalog.h"
#include "core/transport.h"
#include "core/journal.h"
#include "core/render.h"

#include <stdbool.h>

struct poller_config {
	/* The task routes, "{id}" standing for the taskId. */
	const char *task_url;
	const char *progress_url;
	/* Off: no polling, no transcripts (plain TUS servers). */
	bool transcripts;
	/* How long a task may be missing (404) after its upload. */
	long task_timeout_s;
	/* Longest task answer read; a longer one is a poll error. */
	size_t max_task_json;
	/* poller_delete_task deletes tasks (-o delete_remote). */
	bool delete_remote;
	/* Where STATE/transcripts lives. */
	const char *state_dir;
	/* Makes each thread's transport; must outlive poller_start. */
	struct transport_factory transport;
	/* May be NULL (tests). */
	struct journal *journal;
};

struct poller;

/* Strings are copied. NULL with *err set on failure. */
struct poller *poller_create(const struct poller_config *cfg,
			     struct catalog *cat, int *err);

/* Starts the threads (after fuse_daemonize). */
int poller_start(struct poller *p) WARN_UNUSED;

/* Aborts the polls in flight and joins the threads. */
void poller_stop(struct poller *p);

void poller_free(struct poller *p);

/* Whether transcript sidecars exist at all (-o transcripts). */
bool poller_transcripts(const struct poller *p);

/*
 * After journal_load: resumes polling every unfinished task, re-polls a
 * completed one whose files are gone, and removes transcript files no
 * entry owns. Before poller_start.
 */
void poller_resume(struct poller *p);

/* The functions below need the catalog lock. */

/*
 * n's upload has just completed: its task is to be polled, unless the
 * answer to its last byte refused it (then the transcription fails now,
 * with n->up.message in its error).
 */
void poller_upload_done(struct poller *p, struct node *n,
			enum final_answer answer);

/* n starts a new upload (new taskId): forget the old transcription. */
void poller_new_upload(struct poller *p, struct node *n);

/* Someone reads n's sidecars: poll again within a second. */
void poller_watch(struct poller *p, struct node *n);

/*
 * n is being unlinked or replaced: with -o delete_remote, and if its
 * upload is complete, its task is deleted on the server (DELETE
 * task_url/delete), once, soon, by a poller thread; the outcome is logged.
 */
void poller_delete_task(struct poller *p, const struct node *n);

/* n is gone for good: removes its stored transcripts. */
void poller_forget(struct poller *p, const struct node *n);

/* Opens n's stored transcript in format f for reading. fd or -errno. */
int poller_open_transcript(struct poller *p, const struct node *n,
			   enum render_format f) WARN_UNUSED;

#endif
