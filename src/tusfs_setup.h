/*
 * Included first by every .c file of tusfs: the feature macros and the FUSE
 * API version must be set before any system header is read.
 */
#ifndef TUSFS_SETUP_H
#define TUSFS_SETUP_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#define _FILE_OFFSET_BITS 64
#define FUSE_USE_VERSION  314

#ifdef TUSFS_UNIT_TESTS
#define TUSFS_STATIC
#else
#define TUSFS_STATIC static
#endif

#define WARN_UNUSED __attribute__((warn_unused_result))

#endif
