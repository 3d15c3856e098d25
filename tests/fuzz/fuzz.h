/*
 * What every fuzz target shares: check(), which stops the run with the
 * failed condition and its line, so a finding names the broken promise
 * rather than only a deadly signal.
 */
#ifndef TUSFS_FUZZ_H
#define TUSFS_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, \
				__LINE__, #cond);                              \
			abort();                                               \
		}                                                              \
	} while (0)

#endif
