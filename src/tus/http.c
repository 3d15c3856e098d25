/*
 * The transport-neutral half of the HTTP contract: response headers, and
 * a request body read from a file. Every transport and every caller of one
 * uses these; none of it knows libcurl.
 */
#include "tus_setup.h"
#include "tus/http.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

void tus_http_response_clear(struct tus_http_response *resp)
{
	free(resp->headers);
	free(resp->body);
	memset(resp, 0, sizeof(*resp));
}

int tus_http_response_header(const struct tus_http_response *resp,
			     const char *name, char *out, size_t outsz)
{
	size_t nlen = strlen(name);
	const char *p = resp->headers;

	while (p && *p) {
		const char *eol = strchr(p, '\n');
		const char *end = eol ? eol : p + strlen(p);

		if ((size_t)(end - p) > nlen && p[nlen] == ':' &&
		    strncasecmp(p, name, nlen) == 0) {
			const char *v = p + nlen + 1;
			size_t len;

			while (v < end && (*v == ' ' || *v == '\t'))
				v++;
			while (end > v && isspace((unsigned char)end[-1]))
				end--;
			len = (size_t)(end - v);
			if (len + 1 > outsz)
				return -E2BIG;
			memcpy(out, v, len);
			out[len] = '\0';
			return (int)len;
		}
		p = eol ? eol + 1 : end;
	}
	return -ENOENT;
}

ssize_t tus_http_fd_read(void *arg, char *buf, size_t n, uint64_t off)
{
	const struct tus_http_fd_source *src = arg;
	ssize_t r;

	do {
		r = pread(src->fd, buf, n, (off_t)(src->base + off));
	} while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : r;
}
