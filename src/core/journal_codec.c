/*
 * The journal's record format: a node's state to a record and back. A
 * record is a 20-byte header (magic "TUSJ", version, body length, xxh3 of
 * the body) and a body of tagged fields (u8 tag, u32 length, value;
 * numbers little-endian). Unknown tags are skipped, so a newer tusfs can
 * add fields; every known field is range-checked, so a record that passes
 * the checksum but not the checks is still refused. Pure: no I/O.
 */
#include "tusfs_setup.h"
#include "core/journal_int.h"
#include "core/log.h"
#include "tus/tus.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

enum tag {
	T_INO = 1,
	T_PARENT,
	T_SEQ,
	T_MODE,
	T_UID,
	T_GID,
	T_ATIME,
	T_MTIME,
	T_CTIME,
	T_NAME,
	T_SIZE,
	T_FINGERPRINT,
	T_URL,
	T_OFFSET,
	T_LENGTH,
	T_TASK_ID,
	T_STATE,
	T_FLAGS,
	T_MESSAGE,
	T_TR_STATE,
	T_TR_STAGE,
	T_TR_PERCENT,
	T_TR_SINCE,
	T_TR_DONE,
	T_TR_SIZES,
	T_TR_ERROR,
	T_COUNT
};

struct out {
	char *p;
	size_t len;
};

static void put_le(struct out *o, uint64_t v, unsigned bytes)
{
	for (unsigned i = 0; i < bytes; i++)
		o->p[o->len++] = (char)(v >> (8 * i));
}

static void put_field(struct out *o, enum tag t, const void *v, size_t len)
{
	put_le(o, (uint64_t)t, 1);
	put_le(o, len, 4);
	memcpy(o->p + o->len, v, len);
	o->len += len;
}

static void put_u64(struct out *o, enum tag t, uint64_t v)
{
	put_le(o, (uint64_t)t, 1);
	put_le(o, 8, 4);
	put_le(o, v, 8);
}

static void put_pair(struct out *o, enum tag t, uint64_t a, uint64_t b)
{
	put_le(o, (uint64_t)t, 1);
	put_le(o, 16, 4);
	put_le(o, a, 8);
	put_le(o, b, 8);
}

static void put_time(struct out *o, enum tag t, const struct timespec *ts)
{
	put_pair(o, t, (uint64_t)ts->tv_sec, (uint64_t)ts->tv_nsec);
}

static size_t str_len(const char *s)
{
	return s ? strlen(s) : 0;
}

static void put_transcription(struct out *o, const struct journal_entry *e)
{
	if (e->tr_state == TR_NONE)
		return;
	put_u64(o, T_TR_STATE, e->tr_state);
	if (e->tr_stage[0])
		put_field(o, T_TR_STAGE, e->tr_stage, strlen(e->tr_stage));
	put_u64(o, T_TR_PERCENT, (uint64_t)(int64_t)e->tr_percent);
	put_time(o, T_TR_SINCE, &e->tr_since);
	put_time(o, T_TR_DONE, &e->tr_done);
	put_le(o, T_TR_SIZES, 1);
	put_le(o, sizeof(e->tr_sizes), 4);
	for (size_t i = 0; i < 4; i++)
		put_le(o, e->tr_sizes[i], 8);
	if (e->tr_error)
		put_field(o, T_TR_ERROR, e->tr_error, strlen(e->tr_error));
}

int journal_encode(const struct journal_entry *e, char **buf, size_t *len)
{
	size_t names = str_len(e->name) + str_len(e->url) +
		       str_len(e->message) + str_len(e->task_id) +
		       str_len(e->tr_error) + sizeof(e->tr_stage) +
		       sizeof(e->tr_sizes);
	/* Fixed fields: at most T_COUNT of 5 + 16 bytes. */
	size_t cap = HEADER_LEN + T_COUNT * 21 + names;
	struct out o = {.len = HEADER_LEN};
	uint64_t flags = (e->restart ? FLAG_RESTART : 0) |
			 (e->new_generation ? FLAG_NEW_GENERATION : 0) |
			 (e->final_sent ? FLAG_FINAL_SENT : 0) |
			 (e->paused ? FLAG_PAUSED : 0);

	if (cap > JOURNAL_MAX_RECORD || !e->name)
		return -EINVAL;
	o.p = malloc(cap);
	if (!o.p)
		return -ENOMEM;
	put_u64(&o, T_INO, e->ino);
	put_u64(&o, T_PARENT, e->parent);
	put_u64(&o, T_SEQ, e->seq);
	put_u64(&o, T_MODE, e->mode);
	put_u64(&o, T_UID, e->uid);
	put_u64(&o, T_GID, e->gid);
	put_time(&o, T_ATIME, &e->atime);
	put_time(&o, T_MTIME, &e->mtime);
	put_time(&o, T_CTIME, &e->ctime);
	put_field(&o, T_NAME, e->name, strlen(e->name));
	/* A folder has flags only when paused (a file always has them). */
	if (S_ISDIR(e->mode) && flags)
		put_u64(&o, T_FLAGS, flags);
	if (S_ISREG(e->mode)) {
		put_u64(&o, T_SIZE, e->size);
		if (e->fp_valid)
			put_pair(&o, T_FINGERPRINT, e->fp_size, e->fp_hash);
		if (e->url)
			put_field(&o, T_URL, e->url, strlen(e->url));
		put_u64(&o, T_OFFSET, e->offset);
		put_u64(&o, T_LENGTH, (uint64_t)e->declared_length);
		if (e->task_id[0])
			put_field(&o, T_TASK_ID, e->task_id,
				  strlen(e->task_id));
		put_u64(&o, T_STATE, e->state);
		put_u64(&o, T_FLAGS, flags);
		if (e->message)
			put_field(&o, T_MESSAGE, e->message,
				  strlen(e->message));
		put_transcription(&o, e);
	}
	{
		size_t body = o.len - HEADER_LEN;
		struct out h = {.p = o.p};

		memcpy(h.p, MAGIC, 4);
		h.len = 4;
		put_le(&h, VERSION, 2);
		put_le(&h, 0, 2);
		put_le(&h, body, 4);
		put_le(&h, XXH3_64bits(o.p + HEADER_LEN, body), 8);
	}
	*len = o.len;
	*buf = o.p;
	return 0;
}

uint64_t journal_get_le(const unsigned char *p, unsigned bytes)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < bytes; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* A copy of a string field, refusing NULs and (if strict) controls. */
static int get_string(const unsigned char *v, size_t len, size_t max,
		      bool strict, char **out)
{
	if (len > max || *out)
		return -EBADMSG;
	for (size_t i = 0; i < len; i++)
		if (v[i] == 0 || (strict && (v[i] < 0x20 || v[i] == 0x7f)))
			return -EBADMSG;
	*out = strndup((const char *)v, len);
	return *out ? 0 : -ENOMEM;
}

static bool valid_task_id(const char *s)
{
	for (size_t i = 0; i < META_UUID_LEN; i++) {
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;
		bool hex = (s[i] >= '0' && s[i] <= '9') ||
			   (s[i] >= 'a' && s[i] <= 'f');

		if (dash ? s[i] != '-' : !hex)
			return false;
	}
	return s[META_UUID_LEN] == '\0';
}

/*
 * Stores one field of a record in e. 0 or -errno (-EBADMSG for a bad
 * length or value). One case per tag, so it is longer than STYLE.md's 80
 * statements: split, the record format would be spread over several
 * functions.
 */
/* NOLINTNEXTLINE(readability-function-size) */
static int decode_field(struct journal_entry *e, unsigned tag,
			const unsigned char *v, size_t len)
{
	uint64_t a = len >= 8 ? journal_get_le(v, 8) : 0;
	uint64_t b = len >= 16 ? journal_get_le(v + 8, 8) : 0;
	struct timespec ts = {.tv_sec = (time_t)a, .tv_nsec = (long)b};
	bool pair = tag == T_ATIME || tag == T_MTIME || tag == T_CTIME ||
		    tag == T_FINGERPRINT || tag == T_TR_SINCE ||
		    tag == T_TR_DONE;
	bool string = tag == T_NAME || tag == T_URL || tag == T_MESSAGE ||
		      tag == T_TASK_ID || tag == T_TR_STAGE ||
		      tag == T_TR_ERROR;
	size_t want = tag == T_TR_SIZES ? sizeof(e->tr_sizes) : pair ? 16 : 8;

	if (tag >= T_INO && tag < T_COUNT && !string && len != want)
		return -EBADMSG;
	if (pair && tag != T_FINGERPRINT && b >= 1000000000)
		return -EBADMSG;
	switch (tag) {
	case T_INO:
		e->ino = a;
		return a && a < JOURNAL_MAX_INO ? 0 : -EBADMSG;
	case T_PARENT:
		e->parent = a;
		return a < JOURNAL_MAX_INO ? 0 : -EBADMSG;
	case T_SEQ:
		e->seq = a;
		return 0;
	case T_MODE:
		e->mode = (uint32_t)a;
		return a <= UINT32_MAX && (S_ISREG(e->mode) || S_ISDIR(e->mode))
			   ? 0
			   : -EBADMSG;
	case T_UID:
		e->uid = (uint32_t)a;
		return a <= UINT32_MAX ? 0 : -EBADMSG;
	case T_GID:
		e->gid = (uint32_t)a;
		return a <= UINT32_MAX ? 0 : -EBADMSG;
	case T_ATIME:
		e->atime = ts;
		return 0;
	case T_MTIME:
		e->mtime = ts;
		return 0;
	case T_CTIME:
		e->ctime = ts;
		return 0;
	case T_NAME:
		if (memchr(v, '/', len) || (len == 1 && v[0] == '.') ||
		    (len == 2 && v[0] == '.' && v[1] == '.'))
			return -EBADMSG;
		return get_string(v, len, 255, false, &e->name);
	case T_SIZE:
		e->size = a;
		return a <= INT64_MAX ? 0 : -EBADMSG;
	case T_FINGERPRINT:
		e->fp_valid = true;
		e->fp_size = a;
		e->fp_hash = b;
		return 0;
	case T_URL:
		return len ? get_string(v, len, MAX_URL, true, &e->url)
			   : -EBADMSG;
	case T_OFFSET:
		e->offset = a;
		return a <= INT64_MAX ? 0 : -EBADMSG;
	case T_LENGTH:
		e->declared_length = (int64_t)a;
		return e->declared_length >= TUS_LENGTH_UNKNOWN ? 0 : -EBADMSG;
	case T_TASK_ID:
		if (len != META_UUID_LEN)
			return -EBADMSG;
		memcpy(e->task_id, v, len);
		e->task_id[len] = '\0';
		return valid_task_id(e->task_id) ? 0 : -EBADMSG;
	case T_STATE:
		e->state = (uint32_t)a;
		return a <= UPLOAD_EMPTY ? 0 : -EBADMSG;
	case T_FLAGS:
		e->restart = a & FLAG_RESTART;
		e->new_generation = a & FLAG_NEW_GENERATION;
		e->final_sent = a & FLAG_FINAL_SENT;
		e->paused = a & FLAG_PAUSED;
		return 0;
	case T_MESSAGE:
		return get_string(v, len, MAX_MESSAGE, false, &e->message);
	case T_TR_STATE:
		e->tr_state = (uint32_t)a;
		return a <= TR_STARTING ? 0 : -EBADMSG;
	case T_TR_STAGE:
		if (len >= sizeof(e->tr_stage))
			return -EBADMSG;
		for (size_t i = 0; i < len; i++)
			if (v[i] < 0x20 || v[i] >= 0x7f)
				return -EBADMSG;
		memcpy(e->tr_stage, v, len);
		e->tr_stage[len] = '\0';
		return 0;
	case T_TR_PERCENT:
		e->tr_percent = (int32_t)(int64_t)a;
		return e->tr_percent >= -1 && e->tr_percent <= 100 ? 0
								   : -EBADMSG;
	case T_TR_SINCE:
		e->tr_since = ts;
		return 0;
	case T_TR_DONE:
		e->tr_done = ts;
		return 0;
	case T_TR_SIZES:
		for (size_t i = 0; i < 4; i++) {
			e->tr_sizes[i] = journal_get_le(v + 8 * i, 8);
			if (e->tr_sizes[i] > INT64_MAX)
				return -EBADMSG;
		}
		return 0;
	case T_TR_ERROR:
		return get_string(v, len, MAX_MESSAGE, false, &e->tr_error);
	default:
		return 0; /* a field from a newer version */
	}
}

int journal_decode(const void *buf, size_t len, struct journal_entry *e)
{
	const unsigned char *p = buf, *end;
	uint32_t seen = 0;
	size_t body;
	int rc = 0;

	memset(e, 0, sizeof(*e));
	e->declared_length = TUS_LENGTH_UNKNOWN;
	e->tr_percent = -1;
	if (len < HEADER_LEN || memcmp(p, MAGIC, 4) != 0 ||
	    journal_get_le(p + 4, 2) != VERSION ||
	    journal_get_le(p + 6, 2) != 0)
		return -EBADMSG;
	body = (size_t)journal_get_le(p + 8, 4);
	if (body != len - HEADER_LEN ||
	    XXH3_64bits(p + HEADER_LEN, body) != journal_get_le(p + 12, 8))
		return -EBADMSG;
	end = p + len;
	p += HEADER_LEN;
	while (rc == 0 && p < end) {
		unsigned tag;
		size_t flen;

		if (end - p < 5) {
			rc = -EBADMSG;
			break;
		}
		tag = p[0];
		flen = (size_t)journal_get_le(p + 1, 4);
		p += 5;
		if (flen > (size_t)(end - p)) {
			rc = -EBADMSG;
			break;
		}
		if (tag < 32 && (seen & (1u << tag)))
			rc = -EBADMSG; /* a field twice */
		else
			rc = decode_field(e, tag, p, flen);
		if (tag < 32)
			seen |= 1u << tag;
		p += flen;
	}
	/* The identity fields are not optional. */
	if (rc == 0 && (!e->ino || !e->name || !(seen & (1u << T_PARENT)) ||
			!(seen & (1u << T_MODE)) ||
			(!e->name[0] && e->ino != CATALOG_ROOT_INO)))
		rc = -EBADMSG;
	if (rc < 0) {
		journal_entry_clear(e);
		return rc == -ENOMEM ? rc : -EBADMSG;
	}
	return 0;
}

void journal_entry_clear(struct journal_entry *e)
{
	free(e->name);
	free(e->url);
	free(e->message);
	free(e->tr_error);
	memset(e, 0, sizeof(*e));
}
