/*
 * The mount-wide bandwidth limit (-o max_rate, `tusfs limit`), applied as
 * request bodies are read, so it holds for every upload together.
 */
#include "tusfs_setup.h"
#include "core/engine_int.h"
#include "core/engine.h"
#include "core/clock.h"
#include "core/journal.h"
#include "core/log.h"
#include "core/meta.h"
#include "core/plan.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

/*
 * The bandwidth limit: holds a reader until its len bytes are due on the
 * limit's clock (GCRA: every byte moves the clock 1/rate s on; time idle
 * earns no credit, so no burst follows a pause). It sleeps in slices, so
 * a changed limit, a cancel or a shutdown is noticed within 100 ms.
 */
void engine_throttle(struct engine *e, size_t len, const atomic_int *cancel)
{
	struct rate_limit *rl = &e->limit;
	struct timespec now, due;

	if (atomic_load(&rl->rate) == 0)
		return;
	pthread_mutex_lock(&rl->lock);
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (ts_before(&rl->next, &now))
		rl->next = now;
	due = rl->next;
	ts_add_ns(&rl->next, (uint64_t)((double)len * 1e9 /
					(double)atomic_load(&rl->rate)));
	pthread_mutex_unlock(&rl->lock);
	while (ts_before(&now, &due) && atomic_load(&rl->rate) != 0 &&
	       !atomic_load(cancel) && !atomic_load(&e->abort_all)) {
		struct timespec slice = {0, 100000000L};
		uint64_t left =
		    (uint64_t)(due.tv_sec - now.tv_sec) * 1000000000ULL +
		    (uint64_t)due.tv_nsec - (uint64_t)now.tv_nsec;

		if (left < 100000000ULL)
			slice.tv_nsec = (long)left;
		nanosleep(&slice, NULL);
		clock_gettime(CLOCK_MONOTONIC, &now);
	}
}

void engine_set_rate(struct engine *e, uint64_t rate)
{
	pthread_mutex_lock(&e->limit.lock);
	atomic_store(&e->limit.rate, rate);
	/* The new rate counts from now, not from the old one's debts. */
	clock_gettime(CLOCK_MONOTONIC, &e->limit.next);
	pthread_mutex_unlock(&e->limit.lock);
	if (rate)
		log_info("bandwidth limit: %llu bytes/s",
			 (unsigned long long)rate);
	else
		log_info("bandwidth limit: off");
}

uint64_t engine_rate(const struct engine *e)
{
	return atomic_load(&e->limit.rate);
}
