/*
 * What the engine's files share: the engine and worker structs and the
 * helpers one file defines and another calls. engine.c has the queue, the
 * workers' loop, the public calls and fsync's wait; engine_step.c a
 * worker's step and its outcomes; engine_limit.c the bandwidth limit.
 * Nothing outside them includes this.
 */
#ifndef TUSFS_ENGINE_INT_H
#define TUSFS_ENGINE_INT_H

#include "core/engine.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define BACKOFF_CAP_S	  60
#define RETRY_AFTER_CAP_S 3600
/* Conflicts or vanished uploads in a row before backing off. */
#define HOT_RETRIES 3

/* The mount-wide bandwidth limit (-o max_rate, `tusfs limit`). Its own
 * lock: the transport reads bodies without the catalog's. */
struct rate_limit {
	pthread_mutex_t lock;
	atomic_uint_fast64_t rate; /* bytes per second; 0: none */
	struct timespec next;	   /* when the next byte may go */
};

struct worker {
	struct engine *e;
	pthread_t thread;
	struct tus_http *http;
	struct tus_client *tus;
};

struct engine {
	struct catalog *cat;
	struct spool *spool;
	struct journal *journal;
	char *endpoint;
	char *language;
	char *temp_names;
	struct poller *poller;
	struct transport_factory transport;
	struct tus_server server;
	/* Bytes per PATCH: -o chunk_size, or less once a 413 taught that
	 * the endpoint (a proxy in front) takes no more; catalog lock. */
	uint64_t chunk_size;
	long answer_timeout_s;
	void (*learned)(void *arg, uint64_t max_body);
	void *learned_arg;
	unsigned nworkers;
	unsigned started;
	struct worker *workers;
	pthread_cond_t work_cv;	    /* workers wait here for the queue */
	pthread_cond_t progress_cv; /* fsync waits here for confirmations */
	struct node *qhead, *qtail; /* protected by catalog lock */
	bool running;		    /* protected by catalog lock */
	bool stopped;		    /* protected by catalog lock */
	/* Set at shutdown: every request in flight gives up. */
	atomic_int abort_all;
	struct rate_limit limit;
	/* Completed files whose spool is kept, least recently completed
	 * first; protected by catalog lock. */
	struct node *cache_head, *cache_tail;
	uint64_t cache_bytes, cache_size;
};

enum step_result {
	STEP_CONTINUE, /* decide the next step now */
	STEP_IDLE,     /* nothing to do until kicked */
	STEP_LATER,    /* retry at up.not_before */
};

static inline pthread_mutex_t *engine_mutex(struct engine *e)
{
	return catalog_mutex(e->cat);
}

/* Defined in one of the files, called from another. */
void engine_cache_drop(struct engine *e, struct node *n);
void engine_cache_add(struct engine *e, struct node *n);
void engine_set_message(struct node *n, const char *msg);
enum step_result engine_process(struct worker *w, struct node *n);
void engine_throttle(struct engine *e, size_t len, const atomic_int *cancel);

#endif
