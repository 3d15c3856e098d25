/*
 * Renderers: pure functions from a parsed transcript to the bytes of the
 * sidecar files (TXT, SRT, VTT, JSON) and from an upload's state to the
 * NAME.status document. They know nothing of the catalog, the network or
 * FUSE; every output is a malloc'd buffer the caller frees.
 *
 * Layouts follow the service's web app (BACKEND.md section 3) with two
 * deliberate differences: segment text is trimmed (and inner line breaks
 * become spaces, so one segment stays one line or one cue), and every
 * non-empty text file ends with exactly one '\n'.
 */
#ifndef TUSFS_RENDER_H
#define TUSFS_RENDER_H

#include "tusfs_setup.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* One transcript segment; strings borrowed. */
struct segment {
	double start, end;   /* seconds, finite and >= 0 */
	const char *text;    /* already trimmed, no line breaks */
	const char *speaker; /* NULL when the segment has none */
};

/*
 * A transcript: the segments for TXT/SRT/VTT, and for JSON the server's
 * metadata object (NULL renders as {}) and segment objects (each rendered
 * with its "text" replaced by seg[i].text). All borrowed.
 */
struct transcript {
	const struct segment *seg;
	size_t count;
	const json_t *metadata;
	const json_t *segments; /* array of count objects, or NULL */
};

enum render_format {
	RENDER_TXT,
	RENDER_SRT,
	RENDER_VTT,
	RENDER_JSON,
	RENDER_FORMATS
};

/* File suffix of a format, without the dot: "txt", "srt", "vtt", "json". */
const char *render_suffix(enum render_format f);

/* Renders t as format f into *out (malloc'd, *len bytes, also NUL
 * terminated). 0 or -ENOMEM. */
int render_transcript(const struct transcript *t, enum render_format f,
		      char **out, size_t *len) WARN_UNUSED;

/*
 * Writes seconds as "HH:MM:SS<sep>mmm": milliseconds rounded (59.9996 is
 * 00:01:00,000), hours not wrapped at 24. Negative or non-finite input
 * prints as zero, over 1e9 s (TASK_MAX_SECONDS) as 1e9 s. buf needs
 * RENDER_TIME_MAX bytes.
 */
#define RENDER_TIME_MAX 32
void render_time(double seconds, char sep, char *buf);

/*
 * What NAME.status shows. Strings borrowed, NULL for "none" (rendered as
 * null); numbers below zero are unknown (null).
 */
struct status_view {
	const char *state; /* held queued uploading retrying uploaded ... */
	uint64_t confirmed, total;
	double rate; /* bytes per second while uploading */
	double eta;  /* seconds left while uploading */
	const char *url;
	const char *task_id;
	const char *error; /* the upload's last error in words */
	/* The transcription; task_status NULL renders "transcription": null
	 * (transcripts off, or an empty file). */
	const char *task_status;
	const char *task_stage;
	int task_percent;
	const char *task_error; /* the server's message for a failed task */
	const char *poll_error; /* what went wrong with the last poll */
};

/* Renders v as a pretty JSON document ending in '\n'. 0 or -ENOMEM. */
int render_status(const struct status_view *v, char **out,
		  size_t *len) WARN_UNUSED;

#endif
