/*
 * Included first by every .c file of the TUS library: the feature macros
 * must be set before any system header is read. The library needs no more
 * than this, so it shares nothing with the daemon's setup.
 */
#ifndef TUS_SETUP_H
#define TUS_SETUP_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#define _FILE_OFFSET_BITS 64

#endif
