/*
 * Leveled logging to stderr (foreground) or syslog (daemon), with secret
 * redaction: a registered secret is replaced by "***" in every message, so a
 * token that slips into a URL or a server's echo never reaches a log. Every
 * message is one line: control characters in it (a newline or an escape in a
 * file name) are written as \n, \r, \t or \xHH.
 */
#ifndef TUSFS_LOG_H
#define TUSFS_LOG_H

#include <stddef.h>

enum log_level {
	LOG_LEVEL_ERROR,
	LOG_LEVEL_WARN,
	LOG_LEVEL_INFO,
	LOG_LEVEL_DEBUG,
};

/* Returns 0 and sets *out, or -EINVAL for an unknown name. */
int log_level_parse(const char *name, enum log_level *out);

void log_set_level(enum log_level level);
enum log_level log_get_level(void);

/* Switches the sink to syslog (after daemonizing). */
void log_use_syslog(void);

/*
 * Registers a secret to redact (copied; at most one). NULL or "" clears it.
 * Call before any thread logs.
 */
void log_set_secret(const char *secret);

/*
 * Copies s into out (of size n > 0, always NUL-terminated) with every
 * control character (below 0x20, and 0x7f) written as a visible escape:
 * \n, \r, \t, else \xHH; bytes from 0x80 up pass as they are, UTF-8 or
 * not. So a name quoted in a message, or printed by the CLI, cannot end
 * its line, forge the next one or drive a terminal. Truncates, never inside
 * an escape. Returns the length written. log_msg() does this to every
 * message.
 */
size_t log_escape(const char *s, char *out, size_t n);

void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)

#endif
