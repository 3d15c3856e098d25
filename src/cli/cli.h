/*
 * The subcommands that inspect a mount from outside: `tusfs wait`,
 * `tusfs status` and `tusfs limit`. They talk to the daemon only through the
 * filesystem (user.tusfs.* attributes and NAME.status), so they need no socket
 * and work for whoever can read the mount.
 */
#ifndef TUSFS_CLI_H
#define TUSFS_CLI_H

#include <stdbool.h>
#include <sys/types.h>

/* Exit codes, as documented in README, --help and tusfs(1). */
enum cli_exit {
	CLI_DONE = 0,	 /* wait: every upload is confirmed */
	CLI_FAILED = 1,	 /* wait: some failed for good; they are listed */
	CLI_TIMEOUT = 2, /* wait: --timeout passed with uploads pending */
	CLI_USAGE = 3,	 /* bad arguments, or not a tusfs mount */
};

/*
 * Reads attribute name of path into buf (NUL-terminated, truncated to
 * size - 1). The length, or -1 with errno set (buf is then "").
 */
ssize_t cli_attr(const char *path, const char *name, char *buf, size_t size);

/* How many bytes of a walked path under mnt to skip to make it relative. */
size_t cli_prefix(const char *mnt);

/* Whether mnt is a tusfs mount; if not, says so on stderr as cmd. */
bool cli_is_mount(const char *cmd, const char *mnt);

/* Takes arg as the MOUNTPOINT argument when none was given yet and it is
 * not an option; false otherwise. */
bool cli_mount_arg(const char *arg, const char **mnt);

/* After the arguments: mnt when a mountpoint was given (else usage() runs)
 * and it is a tusfs mount; NULL otherwise. */
const char *cli_mount_given(const char *cmd, const char *mnt,
			    void (*usage)(void));

/* argv[0] is "wait". Returns an enum cli_exit. */
int wait_main(int argc, char *argv[]);

/* argv[0] is "status". Returns CLI_DONE or CLI_USAGE. */
int status_main(int argc, char *argv[]);

/* argv[0] is "limit". Returns CLI_DONE or CLI_USAGE. */
int limit_main(int argc, char *argv[]);

/* argv[0] is "pause" or "resume"; the PATHs follow the mount point.
 * Returns CLI_DONE, or CLI_USAGE if any PATH could not be changed. */
int pause_main(int argc, char *argv[]);

#endif
