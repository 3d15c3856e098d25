/*
 * An in-memory TUS server for the engine tests: a transport factory whose
 * transports (one per worker or poller thread) all talk to one server
 * state under a mutex. It keeps every upload's bytes, so a test can compare
 * them with what was written, logs every request, answers the task API
 * like the service does, and plays scripted faults: an answer, a reset, a
 * stall that the test releases. No socket, no thread of its own.
 */
#ifndef TUSFS_TUS_FAKE_SERVER_H
#define TUSFS_TUS_FAKE_SERVER_H

#include "core/transport.h"

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#define FAKE_ORIGIN   "http://fake.test"
#define FAKE_ENDPOINT FAKE_ORIGIN "/files/"
#define FAKE_TASK_URL FAKE_ORIGIN "/task/{id}"
/* A fault's store: the whole body. */
#define FAKE_ALL UINT64_MAX

enum fake_action {
	FAKE_ANSWER, /* answer status (and Retry-After) */
	FAKE_RESET,  /* no answer: the request fails with -ECONNRESET */
	FAKE_STALL,  /* wait for fake_server_release(), then go on as usual */
};

/* What to do to one request; faults are used once, in the order given. */
struct fake_fault {
	const char *method;
	/* Requests that match are let through this many times first. */
	unsigned skip;
	/* PATCH: only the one that carries the upload's last byte. */
	bool final_only;
	/* Body bytes read and stored before the fault acts (FAKE_ALL). */
	uint64_t store;
	enum fake_action action;
	long status;
	/* Retry-After seconds with the answer; 0: none. */
	long retry_after;
};

/* One request as the server saw it. */
struct fake_logged {
	char method[8];
	/* The upload it named (or created), -1 for none. */
	int upload;
	/* PATCH: Upload-Offset and Upload-Length (-1: none sent). */
	uint64_t offset;
	int64_t length;
	/* Body bytes stored by this request. */
	uint64_t stored;
	/* The answer's status, or 0 when perform failed with rc. */
	long status;
	int rc;
	/* CLOCK_MONOTONIC: when it came and when it ended. */
	struct timespec start, end;
};

struct fake_server;

struct fake_server *fake_server_create(void);
void fake_server_free(struct fake_server *s);

/* The factory the engine and the poller take their transports from. */
struct transport_factory fake_server_factory(struct fake_server *s);

void fake_server_fault(struct fake_server *s, const struct fake_fault *f);

/* Service mode: an upload completed by a PATCH is taken (HEAD, PATCH and
 * DELETE answer 404 from then on), as tuspyserver's hook does. A task
 * exists for every completed upload either way. */
void fake_server_take(struct fake_server *s, bool on);

/* Waits up to timeout_ms for a request to stall: 0 or -ETIMEDOUT. */
int fake_server_wait_stalled(struct fake_server *s, long timeout_ms);
/* Lets every stalled request go on. */
void fake_server_release(struct fake_server *s);

/* The number of uploads created, and of logged requests. */
int fake_server_uploads(struct fake_server *s);
int fake_server_requests(struct fake_server *s);
/* How many requests used method. */
int fake_server_count(struct fake_server *s, const char *method);
/* Copies request i of the log. 0, or -ENOENT. */
int fake_server_logged(struct fake_server *s, int i, struct fake_logged *out);
/* Body bytes the server stored, over every upload. */
uint64_t fake_server_received(struct fake_server *s);

/* The newest upload whose metadata carries taskId id, or -1. */
int fake_server_find(struct fake_server *s, const char *task_id);

/* Upload i's state. */
struct fake_upload_state {
	uint64_t offset;
	int64_t length; /* -1 while deferred */
	bool complete, deleted, taken;
};
int fake_server_state(struct fake_server *s, int i,
		      struct fake_upload_state *out);

/* Whether upload i holds exactly the len bytes of data (and no more). */
bool fake_server_holds(struct fake_server *s, int i, const void *data,
		       size_t len);

#endif
