/*
 * CLOCK_MONOTONIC arithmetic for the deadlines the engine and the poller
 * keep: retry times, poll times, the bandwidth limiter's schedule.
 */
#ifndef TUSFS_CLOCK_H
#define TUSFS_CLOCK_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

static inline bool ts_before(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec < b->tv_sec ||
	       (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

static inline void ts_add_ns(struct timespec *t, uint64_t ns)
{
	t->tv_sec += (time_t)(ns / 1000000000ULL);
	t->tv_nsec += (long)(ns % 1000000000ULL);
	if (t->tv_nsec >= 1000000000L) {
		t->tv_sec++;
		t->tv_nsec -= 1000000000L;
	}
}

/* The monotonic clock ms milliseconds from now. */
static inline struct timespec ts_in_ms(uint64_t ms)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	ts_add_ns(&t, ms * 1000000ULL);
	return t;
}

#endif
