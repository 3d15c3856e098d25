/*
 * What the poller's two files share: the poller struct and the transcript
 * store's calls. poller.c polls and schedules; poller_store.c keeps the
 * transcripts under STATE/transcripts. Nothing outside them includes this.
 */
#ifndef TUSFS_POLLER_INT_H
#define TUSFS_POLLER_INT_H

#include "core/poller.h"
#include "core/task.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define THREADS	       2 /* polls in flight at most */
#define FIRST_INTERVAL 1000
#define MAX_INTERVAL   30000
#define WATCH_INTERVAL 1000
#define MAX_URL	       4096
#define PROGRESS_BODY  (64 * 1024)

/* A task to delete (-o delete_remote), waiting for a thread. */
struct doomed {
	struct doomed *next;
	char id[META_UUID_LEN + 1];
};

struct poller {
	struct catalog *cat;
	struct journal *journal;
	char *task_url, *progress_url;
	bool transcripts;
	long task_timeout_s;
	size_t max_task_json;
	struct transport_factory transport;
	int dirfd; /* STATE/transcripts */
	pthread_t threads[THREADS];
	struct tus_http *conns[THREADS];
	unsigned started;
	pthread_cond_t cv; /* threads wait here for due polls */
	struct node *head; /* pending tasks, protected by catalog lock */
	bool running;	   /* protected by catalog lock */
	bool delete_remote;
	struct doomed *doomed; /* protected by catalog lock */
	atomic_int abort_all;
};

/* What one poll found, gathered without the lock. */
enum poll_kind {
	POLL_ERROR,	 /* message says what went wrong; try again */
	POLL_NOT_FOUND,	 /* 404: no task (yet) */
	POLL_PROCESSING, /* stage and percent, when the progress route said */
	POLL_COMPLETED,	 /* the transcripts are in the temporaries */
	POLL_FAILED,	 /* message is the server's reason */
};

struct poll_outcome {
	enum poll_kind kind;
	bool have_progress; /* stage and percent are news */
	char stage[32];
	int percent;
	char *message;
	uint64_t sizes[RENDER_FORMATS];
};

/* Defined in one of the files, called from another. */
void poller_remove_files(struct poller *p, const struct node *n, bool tmp);
int poller_store(struct poller *p, const struct node *n,
		 const struct task_result *r, uint64_t *sizes);
int poller_install(struct poller *p, const struct node *n);
bool poller_stored(struct poller *p, const struct node *n);
void poller_sweep(struct poller *p);

#endif
