/*
 * Facts about a file that go into its upload's metadata: the MIME type
 * guessed from the name, and a random task identifier.
 */
#ifndef TUSFS_META_H
#define TUSFS_META_H

#include <stddef.h>

#define META_UUID_LEN 36

/* MIME type for name's extension (case-insensitive); never NULL. */
const char *meta_mime_type(const char *name);

/*
 * Writes a random UUID v4 ("xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx") and a NUL
 * into out, from the kernel's random source. Returns 0 or -errno.
 */
int meta_uuid4(char out[META_UUID_LEN + 1]);

#endif
