/*
 * A minimal unit-test harness: TEST(name) defines a case, the ASSERT_*
 * macros stop it on the first failure, and TEST_MAIN runs every case
 * registered in the file and prints "N passed, M failed".
 */
#ifndef TUSFS_HARNESS_H
#define TUSFS_HARNESS_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct test_case {
	const char *name;
	void (*fn)(int *failed);
};

#define TEST(name)                                                             \
	static void test_##name(int *failed_);                                 \
	static const struct test_case case_##name __attribute__((              \
	    used, section("tests"), aligned(16))) = {#name, test_##name};      \
	static void test_##name(int *failed_)

#define FAIL_AT(fmt, ...)                                                      \
	do {                                                                   \
		fprintf(stderr, "  %s:%d: " fmt "\n", __FILE__, __LINE__,      \
			__VA_ARGS__);                                          \
		*failed_ = 1;                                                  \
		return;                                                        \
	} while (0)

#define ASSERT(cond)                                                           \
	do {                                                                   \
		if (!(cond))                                                   \
			FAIL_AT("assertion failed: %s", #cond);                \
	} while (0)

#define ASSERT_EQ(a, b)                                                        \
	do {                                                                   \
		long long a_ = (long long)(a), b_ = (long long)(b);            \
		if (a_ != b_)                                                  \
			FAIL_AT("%s == %lld, expected %s == %lld", #a, a_, #b, \
				b_);                                           \
	} while (0)

#define ASSERT_STREQ(a, b)                                                     \
	do {                                                                   \
		const char *a_ = (a), *b_ = (b);                               \
		if (!a_ || !b_ || strcmp(a_, b_) != 0)                         \
			FAIL_AT("%s == \"%s\", expected \"%s\"", #a,           \
				a_ ? a_ : "(null)", b_ ? b_ : "(null)");       \
	} while (0)

extern const struct test_case __start_tests[];
extern const struct test_case __stop_tests[];

#define TEST_MAIN                                                              \
	int main(void)                                                         \
	{                                                                      \
		int passed = 0, failed = 0;                                    \
		for (const struct test_case *t = __start_tests;                \
		     t < __stop_tests; t++) {                                  \
			int f = 0;                                             \
			t->fn(&f);                                             \
			printf("%s %s\n", f ? "FAIL" : "ok  ", t->name);       \
			f ? failed++ : passed++;                               \
		}                                                              \
		printf("%d passed, %d failed\n", passed, failed);              \
		return failed || passed == 0 ? 1 : 0;                          \
	}

#endif
