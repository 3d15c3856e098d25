/*
 * `tusfs limit MOUNTPOINT RATE|off`: sets a mount's bandwidth limit while
 * it runs, through the root's user.tusfs.max_rate attribute (the daemon
 * parses and applies it; -o max_rate sets it at mount). It never changes
 * the mount's options: the next mount starts from -o max_rate again.
 */
#include "tusfs_setup.h"
#include "cli.h"
#include "tusfs/fs.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/xattr.h>

int limit_main(int argc, char *argv[])
{
	const char *name = FS_XATTR_PREFIX "max_rate";
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
