/*
 * What the journal's three files share: the record format's constants, the
 * store's state, and the one decoding helper the load borrows. journal.c
 * has the store and its writer thread, journal_codec.c the record format,
 * journal_load.c the mount-time load. Nothing outside them includes this.
 */
#ifndef TUSFS_JOURNAL_INT_H
#define TUSFS_JOURNAL_INT_H

#include "core/journal.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define MAGIC	    "TUSJ"
#define VERSION	    1
#define HEADER_LEN  20
#define MAX_URL	    8192
#define MAX_MESSAGE 4096
#define LOST_FOUND  "lost+found"
/* Where each copy of a record starts in its file. */
#define SLOT JOURNAL_MAX_RECORD
/* After a failed write, wait this long before trying again. */
#define RETRY_S 1

#define FLAG_RESTART	    1u
#define FLAG_NEW_GENERATION 2u
#define FLAG_FINAL_SENT	    4u
#define FLAG_PAUSED	    8u

struct journal {
	struct catalog *cat;
	int dirfd;
	pthread_t thread;
	bool started;
	bool stopping;		  /* protected by catalog lock */
	pthread_cond_t work_cv;	  /* the thread waits here for changes */
	pthread_cond_t done_cv;	  /* journal_wait waits here */
	struct node *head, *tail; /* dirty list, protected by catalog lock */
	uint64_t seq;		  /* last change number handed out */
	uint64_t done;		  /* every change up to this one is written */
};

/* Defined in one of the files, called from another. */
uint64_t journal_get_le(const unsigned char *p, unsigned bytes);

#endif
