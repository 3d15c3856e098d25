/*
 * The `tusfs wait` subcommand.
 */
#ifndef TUSFS_WAIT_H
#define TUSFS_WAIT_H

/* Exit codes, as documented in README and --help. */
enum wait_exit {
	WAIT_DONE = 0,	  /* every upload is confirmed */
	WAIT_FAILED = 1,  /* some failed for good; they are listed */
	WAIT_TIMEOUT = 2, /* --timeout passed with uploads pending */
	WAIT_USAGE = 3,	  /* bad arguments, or not a tusfs mount */
};

/* argv[0] is "wait". Returns an enum wait_exit. */
int wait_main(int argc, char *argv[]);

#endif
