/*
 * The libcurl transport for the TUS client. It is one implementation of
 * tus/http.h; a caller with its own HTTP stack implements struct
 * tus_http_ops instead and never needs this header.
 */
#ifndef TUS_CURL_H
#define TUS_CURL_H

#include "tus/http.h"

#include <stdatomic.h>
#include <stdbool.h>

/* Settings of the libcurl transport. Strings are copied. */
struct tus_http_curl_config {
	/* Sent as "Authorization: Bearer" to auth_origin only; may be NULL. */
	const char *token;
	/* scheme://host:port whose requests get the token. */
	const char *auth_origin;
	const char *cafile;
	bool insecure;
	long connect_timeout_s;
	/* Abort a transfer when no byte has moved for this long. */
	long stall_timeout_s;
	/* When set, every request in flight is aborted (shutdown); may be
	 * NULL. Must outlive the transport. */
	const atomic_int *abort_all;
};

/* Creates a libcurl transport; NULL on allocation failure. */
struct tus_http *tus_http_curl_create(const struct tus_http_curl_config *cfg);

#endif
