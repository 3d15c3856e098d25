/*
 * How the engine and the poller get their HTTP transports: each thread
 * asks the factory for one of its own. The daemon's factory makes libcurl
 * transports; the unit tests' makes a scripted server, so real workers run
 * without a network.
 */
#ifndef TUSFS_TRANSPORT_H
#define TUSFS_TRANSPORT_H

#include "tus/http.h"

#include <stdatomic.h>

struct transport_factory {
	/*
	 * A new transport, or NULL. Its requests must end (-ECANCELED) once
	 * *abort_all is set: that is how the caller stops its threads.
	 */
	struct tus_http *(*create)(void *arg, const atomic_int *abort_all);
	void *arg;
	/* No byte moving for this long aborts a request (the transports'
	 * setting, which the fsync watchdog also goes by). */
	long stall_timeout_s;
};

static inline struct tus_http *transport_new(const struct transport_factory *f,
					     const atomic_int *abort_all)
{
	return f->create(f->arg, abort_all);
}

#endif
