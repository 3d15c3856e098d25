/*
 * Upload metadata helpers. The MIME table covers the audio and video
 * containers people record in; anything else is application/octet-stream,
 * which the service accepts (it sniffs magic bytes itself).
 */
#include "tusfs_setup.h"
#include "core/meta.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

static const struct {
	const char *ext;
	const char *type;
} mime_table[] = {
    {"3gp", "video/3gpp"},	 {"aac", "audio/aac"},
    {"aif", "audio/aiff"},	 {"aiff", "audio/aiff"},
    {"amr", "audio/amr"},	 {"avi", "video/x-msvideo"},
    {"caf", "audio/x-caf"},	 {"flac", "audio/flac"},
    {"m4a", "audio/mp4"},	 {"m4v", "video/mp4"},
    {"mka", "audio/x-matroska"}, {"mkv", "video/x-matroska"},
    {"mov", "video/quicktime"},	 {"mp3", "audio/mpeg"},
    {"mp4", "video/mp4"},	 {"mpeg", "video/mpeg"},
    {"mpg", "video/mpeg"},	 {"oga", "audio/ogg"},
    {"ogg", "audio/ogg"},	 {"ogv", "video/ogg"},
    {"opus", "audio/opus"},	 {"wav", "audio/wav"},
    {"weba", "audio/webm"},	 {"webm", "video/webm"},
    {"wma", "audio/x-ms-wma"},	 {"wmv", "video/x-ms-wmv"},
};

const char *meta_mime_type(const char *name)
{
	const char *dot = strrchr(name, '.');

	if (dot && dot != name) {
		for (size_t i = 0;
		     i < sizeof(mime_table) / sizeof(mime_table[0]); i++)
			if (strcasecmp(dot + 1, mime_table[i].ext) == 0)
				return mime_table[i].type;
	}
	return "application/octet-stream";
}

int meta_uuid4(char out[META_UUID_LEN + 1])
{
	unsigned char b[16];
	size_t got = 0;

	while (got < sizeof(b)) {
		ssize_t r = getrandom(b + got, sizeof(b) - got, 0);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		got += (size_t)r;
	}
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
	snprintf(out, META_UUID_LEN + 1,
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
		 "%02x%02x%02x%02x%02x%02x",
		 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9],
		 b[10], b[11], b[12], b[13], b[14], b[15]);
	return 0;
}
