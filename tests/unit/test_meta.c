/*
 * MIME types by extension and UUID v4 task identifiers.
 */
#include "tusfs_setup.h"
#include "harness.h"
#include "core/meta.h"

#include <ctype.h>

TEST(mime_types)
{
	ASSERT_STREQ(meta_mime_type("talk.wav"), "audio/wav");
	ASSERT_STREQ(meta_mime_type("TALK.MP3"), "audio/mpeg");
	ASSERT_STREQ(meta_mime_type("a.b.m4a"), "audio/mp4");
	ASSERT_STREQ(meta_mime_type("clip.mov"), "video/quicktime");
	ASSERT_STREQ(meta_mime_type("notes"), "application/octet-stream");
	ASSERT_STREQ(meta_mime_type(".wav"), "application/octet-stream");
	ASSERT_STREQ(meta_mime_type("x.wav2"), "application/octet-stream");
}

TEST(uuid4_shape_and_randomness)
{
	char a[META_UUID_LEN + 1], b[META_UUID_LEN + 1];

	ASSERT_EQ(meta_uuid4(a), 0);
	ASSERT_EQ(meta_uuid4(b), 0);
	ASSERT_EQ(strlen(a), 36);
	for (int i = 0; i < 36; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23)
			ASSERT(a[i] == '-');
		else
			ASSERT(isxdigit((unsigned char)a[i]) &&
			       !isupper((unsigned char)a[i]));
	}
	ASSERT(a[14] == '4');
	ASSERT(strchr("89ab", a[19]));
	ASSERT(strcmp(a, b) != 0);
}

TEST_MAIN
