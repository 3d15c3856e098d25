/*
 * What `tusfs wait` and `tusfs status` share: reading the daemon's
 * attributes and telling a tusfs mount from any other directory.
 */
#include "tusfs_setup.h"
#include "cli/cli.h"
#include "core/attrs.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/xattr.h>

ssize_t cli_attr(const char *path, const char *name, char *buf, size_t size)
{
	ssize_t n = getxattr(path, name, buf, size - 1);

	buf[n < 0 ? 0 : n] = '\0';
	return n;
}

size_t cli_prefix(const char *mnt)
{
	size_t len = strlen(mnt);

	return len + (len > 0 && mnt[len - 1] != '/');
}

bool cli_is_mount(const char *cmd, const char *mnt)
{
	char version[64];

	if (cli_attr(mnt, ATTR_PREFIX ATTR_VERSION, version, sizeof(version)) >=
	    0)
		return true;
	fprintf(stderr, "tusfs %s: '%s' is not a tusfs mount: %s\n", cmd, mnt,
		strerror(errno));
	return false;
}

bool cli_mount_arg(const char *arg, const char **mnt)
{
	if (*mnt || arg[0] == '-')
		return false;
	*mnt = arg;
	return true;
}

const char *cli_mount_given(const char *cmd, const char *mnt,
			    void (*usage)(void))
{
	if (!mnt) {
		usage();
		return NULL;
	}
	return cli_is_mount(cmd, mnt) ? mnt : NULL;
}
