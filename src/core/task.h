/*
 * The transcription task client's parsers: the answers of
 * GET /task/{id} and GET /tasks/{id}/progress (BACKEND.md section 2) turned
 * into checked C values. Every byte comes from the network, so everything
 * is validated: a wrong type, a missing field or a number out of range is
 * an error with a message in words, never a crash or a guess.
 */
#ifndef TUSFS_TASK_H
#define TUSFS_TASK_H

#include "tusfs_setup.h"
#include "core/render.h"

#include <jansson.h>
#include <stddef.h>

/* Task answers read by default (-o max_task_json); a longer one is refused
 * and not buffered. */
#define TASK_DEFAULT_BODY (32 * 1024 * 1024)
/* The most -o max_task_json may allow, and task_parse()'s own ceiling. */
#define TASK_MAX_BODY (256 * 1024 * 1024)

/* Largest segment time accepted, in seconds (over 31 years). */
#define TASK_MAX_SECONDS 1e9

enum task_status {
	TASK_PROCESSING,
	TASK_COMPLETED,
	TASK_FAILED,
};

/* A parsed GET /task/{id}. Owns everything; free with task_result_clear. */
struct task_result {
	enum task_status status;
	char *error; /* the server's "error", or NULL */
	/* Completed only: the segments, their strings owned by root. */
	struct segment *seg;
	size_t count;
	/* For render: "metadata" (may be NULL) and "result.segments". */
	struct transcript transcript;
	json_t *root;
};

/*
 * Parses a task answer of len bytes (not NUL-terminated; over
 * TASK_MAX_BODY is refused). 0, or -EBADMSG with why set to a one-line
 * reason ("not JSON: ...", "segment 3: 'end' is missing"), or -ENOMEM; on
 * failure *r is left empty. On success text and speakers are trimmed,
 * inner line breaks replaced by spaces, empty speakers dropped; the
 * normalized strings replace the originals in root, so the JSON sidecar
 * shows them too.
 */
int task_parse(const char *buf, size_t len, struct task_result *r, char *why,
	       size_t whysz) WARN_UNUSED;

void task_result_clear(struct task_result *r);

/* A parsed GET /tasks/{id}/progress. */
struct task_progress {
	char stage[32]; /* "" when null */
	int percent;	/* -1 when null */
};

/*
 * Parses a progress answer. 0, -EBADMSG with why set, or -ENOMEM; on
 * failure *p reads "" and -1.
 */
int task_parse_progress(const char *buf, size_t len, struct task_progress *p,
			char *why, size_t whysz) WARN_UNUSED;

#endif
