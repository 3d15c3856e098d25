/*
 * Logging: levels filter, a registered secret never reaches the output
 * whatever its length or how often it occurs, and a message is one line
 * whatever control characters it quotes.
 */
#include "tusfs_setup.h"
#include "harness.h"
#include "core/log.h"

#include <errno.h>
#include <stdio.h>
#include <unistd.h>

/* Runs one log call with stderr sent to a temp file; returns its text. */
static char *capture(enum log_level level, const char *msg)
{
	static char out[8192];
	FILE *f = tmpfile();
	int saved = dup(STDERR_FILENO);
	size_t n;

	dup2(fileno(f), STDERR_FILENO);
	log_msg(level, "%s", msg);
	dup2(saved, STDERR_FILENO);
	close(saved);
	rewind(f);
	n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = '\0';
	fclose(f);
	return out;
}

TEST(levels)
{
	enum log_level l;

	ASSERT_EQ(log_level_parse("debug", &l), 0);
	ASSERT_EQ(l, LOG_LEVEL_DEBUG);
	ASSERT_EQ(log_level_parse("verbose", &l), -EINVAL);
	log_set_level(LOG_LEVEL_WARN);
	ASSERT(strstr(capture(LOG_LEVEL_ERROR, "shown"), "error: shown"));
	ASSERT_STREQ(capture(LOG_LEVEL_INFO, "hidden"), "");
	log_set_level(LOG_LEVEL_INFO);
}

TEST(secrets_are_redacted)
{
	char big[3000];

	log_set_secret("whsk_abc123");
	ASSERT(strstr(capture(LOG_LEVEL_ERROR, "token whsk_abc123 and "
					       "whsk_abc123!"),
		      "token *** and ***!"));
	/* Short secrets and secrets of stars neither overflow nor loop. */
	log_set_secret("*");
	ASSERT(strstr(capture(LOG_LEVEL_ERROR, "a*b**"), "a***b******"));
	log_set_secret("x");
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	ASSERT(!strstr(capture(LOG_LEVEL_ERROR, big), "x"));
	log_set_secret(NULL);
	ASSERT(strstr(capture(LOG_LEVEL_ERROR, "whsk_abc123"), "whsk_abc123"));
}

TEST(control_characters_are_escaped)
{
	char big[2048];
	const char *out;
	size_t len;

	/* A file name that tries to end the line and forge another, and to
	 * drive the terminal. */
	out =
	    capture(LOG_LEVEL_WARN, "'a\nerror: forged\r\t\x1b[2J\x01\x7f': x");
	ASSERT(strstr(out, "warn: 'a\\nerror: forged\\r\\t\\x1b[2J\\x01\\x7f': "
			   "x\n"));
	ASSERT(strchr(out, '\n') == out + strlen(out) - 1);
	/* UTF-8, and bytes that are not UTF-8, pass as they are. */
	ASSERT(strstr(capture(LOG_LEVEL_WARN, "caf\xc3\xa9 \xf0\x9f\x8e\x99 "
					      "\xff\xfe\x80 \\n"),
		      "caf\xc3\xa9 \xf0\x9f\x8e\x99 \xff\xfe\x80 \\n\n"));
	/* A message cut short is never cut inside an escape. */
	memset(big, 'a', sizeof(big) - 2);
	big[sizeof(big) - 2] = '\x1b';
	big[sizeof(big) - 1] = '\0';
	out = capture(LOG_LEVEL_WARN, big);
	len = strlen(out);
	ASSERT(len > 2 && strcmp(out + len - 2, "a\n") == 0);
}

TEST_MAIN
