/*
 * Logging: one formatted line per call, written with a single write(2) (or
 * syslog(3)) so lines from several threads never interleave. Secrets are
 * redacted here, the last place a message passes before leaving the process;
 * callers are still expected never to format a secret in the first place.
 * Control characters are escaped here too, so that a message is always one
 * line whatever names and server text it quotes.
 */
#include "tusfs_setup.h"
#include "core/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static enum log_level current_level = LOG_LEVEL_INFO;
static bool to_syslog;
static char *secret;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int log_level_parse(const char *name, enum log_level *out)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]);
	     i++) {
		if (strcmp(name, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -EINVAL;
}

void log_set_level(enum log_level level)
{
	current_level = level;
}

enum log_level log_get_level(void)
{
	return current_level;
}

void log_use_syslog(void)
{
	openlog("tusfs", LOG_PID, LOG_DAEMON);
	to_syslog = true;
}

void log_set_secret(const char *s)
{
	free(secret);
	secret = (s && *s) ? strdup(s) : NULL;
}

/*
 * Copies src into out (of size n) with every occurrence of sec (when not
 * NULL) replaced by "***", and every control character written as
 * log_escape() says. Truncates rather than overflow, never inside a
 * replacement. Returns the length written.
 */
static size_t clean(const char *src, const char *sec, char *out, size_t n)
{
	size_t slen = sec ? strlen(sec) : 0;
	size_t o = 0;

	while (*src) {
		unsigned char c = (unsigned char)*src;
		char rep[8];
		size_t rlen = 1, skip = 1;

		if (slen && strncmp(src, sec, slen) == 0) {
			rlen = 3;
			memcpy(rep, "***", rlen);
			skip = slen;
		} else if (c == '\n' || c == '\r' || c == '\t') {
			rep[0] = '\\';
			rep[1] = (char)(c == '\n'   ? 'n'
					: c == '\r' ? 'r'
						    : 't');
			rlen = 2;
		} else if (c < 0x20 || c == 0x7f) {
			rlen = (size_t)snprintf(rep, sizeof(rep), "\\x%02x", c);
		} else {
			rep[0] = (char)c;
		}
		if (o + rlen >= n)
			break;
		memcpy(out + o, rep, rlen);
		o += rlen;
		src += skip;
	}
	out[o] = '\0';
	return o;
}

size_t log_escape(const char *s, char *out, size_t n)
{
	return clean(s, NULL, out, n);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	static const int syslog_prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO,
					  LOG_DEBUG};
	char raw[2048];
	char msg[2048];
	char line[2112];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	int len;
	int saved_errno = errno;

	if (level > current_level)
		return;
	va_start(ap, fmt);
	vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	clean(raw, secret, msg, sizeof(msg));

	if (to_syslog) {
		syslog(syslog_prio[level], "%s", msg);
	} else {
		clock_gettime(CLOCK_REALTIME, &ts);
		localtime_r(&ts.tv_sec, &tm);
		len = snprintf(line, sizeof(line),
			       "tusfs %02d:%02d:%02d.%03ld %s: %s\n",
			       tm.tm_hour, tm.tm_min, tm.tm_sec,
			       ts.tv_nsec / 1000000L, level_names[level], msg);
		if (len > (int)sizeof(line))
			len = sizeof(line);
		if (write(STDERR_FILENO, line, (size_t)len) < 0) {
			/* Nowhere left to report a failing stderr. */
		}
	}
	errno = saved_errno;
}
