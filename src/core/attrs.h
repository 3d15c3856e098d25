/*
 * What a mount shows its state under: the names of its user.tusfs.*
 * extended attributes and the words they hold. The daemon writes them and
 * the subcommands read them, so both take them from here; it is all the
 * subcommands know of the daemon.
 */
#ifndef TUSFS_ATTRS_H
#define TUSFS_ATTRS_H

/* The one namespace a mount has; the others answer ENOTSUP. */
#define ATTR_NAMESPACE "user."
#define ATTR_PREFIX    ATTR_NAMESPACE "tusfs."
/* Longest value: an error message with its HTTP body excerpt. */
#define ATTR_MAX (8192 + 64)

/* On files (paused on folders too). */
#define ATTR_STATE	   "state"
#define ATTR_HELD	   "held"
#define ATTR_PROGRESS	   "progress"
#define ATTR_URL	   "url"
#define ATTR_TASK_ID	   "task_id"
#define ATTR_ERROR	   "error"
#define ATTR_TRANSCRIPTION "transcription"
#define ATTR_PAUSED	   "paused"
/* On folders: per state, how many files below show it (see fs_attr.c). */
#define ATTR_SUMMARY "summary"
/* On the root: the version marks a tusfs mount; max_rate is settable. */
#define ATTR_VERSION  "version"
#define ATTR_MAX_RATE "max_rate"

/* Words of ATTR_STATE (and NAME.status's "state"). */
#define WORD_QUEUED    "queued"
#define WORD_UPLOADING "uploading"
#define WORD_RETRYING  "retrying"
#define WORD_UPLOADED  "uploaded"
#define WORD_FAILED    "failed"
#define WORD_EMPTY     "empty"
#define WORD_HELD      "held"
#define WORD_PAUSED    "paused"

/* Words of ATTR_HELD. */
#define WORD_HELD_TEMPORARY "temporary name"
#define WORD_HELD_WRITING   "open for writing"

/* Words of ATTR_TRANSCRIPTION. */
#define TR_WORD_WAITING	   "waiting"
#define TR_WORD_QUEUED	   "queued"
#define TR_WORD_PROCESSING "processing"
#define TR_WORD_COMPLETED  "completed"
#define TR_WORD_FAILED	   "failed"
#define TR_WORD_MISSING	   "missing"
#define TR_WORD_STARTING   "starting"

#endif
