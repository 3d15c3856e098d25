/*
 * The control subcommands, which change a running mount through the
 * attributes it lets be set (fs.c, tfs_setxattr):
 *   tusfs pause MOUNTPOINT [PATH...] / tusfs resume MOUNTPOINT [PATH...]
 *     user.tusfs.paused on each PATH (default: the mount's root); a folder
 *     takes everything below it along, and the daemon journals it;
 *   tusfs limit MOUNTPOINT RATE|off
 *     the root's user.tusfs.max_rate, the bandwidth limit until the
 *     unmount (-o max_rate sets it at mount).
 */
#include "tusfs_setup.h"
#include "cli/cli.h"
#include "core/attrs.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/xattr.h>

int limit_main(int argc, char *argv[])
{
	const char *name = ATTR_PREFIX ATTR_MAX_RATE;
	char now[32];

	if (argc != 3 || argv[1][0] == '-') {
		fprintf(stderr, "usage: tusfs limit MOUNTPOINT RATE|off "
				"(RATE in bytes per second: 512K, 4M, 1G)\n");
		return CLI_USAGE;
	}
	if (!cli_is_mount("limit", argv[1]))
		return CLI_USAGE;
	if (setxattr(argv[1], name, argv[2], strlen(argv[2]), 0) < 0) {
		fprintf(stderr, "tusfs limit: cannot set '%s' on '%s': %s\n",
			argv[2], argv[1],
			errno == EINVAL ? "not a rate (at least 1K, e.g. 4M; "
					  "off for none)"
					: strerror(errno));
		return CLI_USAGE;
	}
	if (cli_attr(argv[1], name, now, sizeof(now)) < 0)
		return CLI_USAGE;
	printf("tusfs limit: %s%s\n", now,
	       strcmp(now, "off") == 0 ? "" : " bytes per second");
	return CLI_DONE;
}

/* argv[0] is "pause" or "resume". */
int pause_main(int argc, char *argv[])
{
	bool pause = strcmp(argv[0], "pause") == 0;
	const char *value = pause ? "1" : "0";
	int rc = CLI_DONE;

	if (argc < 2 || argv[1][0] == '-') {
		fprintf(stderr, "usage: tusfs %s MOUNTPOINT [PATH...]\n",
			argv[0]);
		return CLI_USAGE;
	}
	if (!cli_is_mount(argv[0], argv[1]))
		return CLI_USAGE;
	for (int i = argc > 2 ? 2 : 1; i < argc; i++) {
		if (setxattr(argv[i], ATTR_PREFIX ATTR_PAUSED, value, 1, 0) <
		    0) {
			fprintf(stderr, "tusfs %s: '%s': %s\n", argv[0],
				argv[i],
				errno == ENOTSUP ? "not on a tusfs mount"
						 : strerror(errno));
			rc = CLI_USAGE;
			continue;
		}
		printf("tusfs %s: %s\n", argv[0], argv[i]);
	}
	return rc;
}
