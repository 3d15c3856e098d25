/*
 * libFuzzer target for the Upload-Metadata encoder. The input is cut into
 * up to five values (any bytes: names reach tusfs from the kernel as they
 * are) under the keys tusfs sends; the encoding is then read back by a
 * strict decoder written here from the TUS 1.0 text, independent of the
 * encoder: comma-separated pairs, one space, padded standard base64. It
 * must give back every key in order and every value byte for byte, with
 * nothing but key characters, the base64 alphabet, spaces and commas on
 * the wire. Each value is also a file name for meta_mime_type, which must
 * answer a printable type/subtype.
 *
 * Run with scripts/fuzz.sh.
 */
#include "tusfs_setup.h"
#include "fuzz.h"
#include "core/meta.h"
#include "tus/tus.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PAIRS 5

static int sextet(char c)
{
	static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
				  "abcdefghijklmnopqrstuvwxyz0123456789+/";
	const char *p = c ? strchr(tbl, c) : NULL;

	return p ? (int)(p - tbl) : -1;
}

/*
 * Decodes n characters of padded base64 at s into out; returns the byte
 * count, or -1 for anything not canonical (bad length, characters,
 * padding, or nonzero bits under the padding).
 */
static long unbase64(const char *s, size_t n, unsigned char *out)
{
	size_t o = 0;

	if (n % 4)
		return -1;
	for (size_t i = 0; i < n; i += 4) {
		bool last = i + 4 == n;
		int pad = last ? (s[i + 3] == '=') + (s[i + 2] == '=') : 0;
		uint32_t v = 0;

		if (pad == 1 && s[i + 2] == '=')
			return -1;
		for (int k = 0; k < 4 - pad; k++) {
			int x = sextet(s[i + k]);

			if (x < 0)
				return -1;
			v |= (uint32_t)x << (18 - 6 * k);
		}
		if ((pad == 2 && (v & 0xffff)) || (pad == 1 && (v & 0xff)))
			return -1;
		out[o++] = (unsigned char)(v >> 16);
		if (pad < 2)
			out[o++] = (unsigned char)(v >> 8);
		if (pad < 1)
			out[o++] = (unsigned char)v;
	}
	return (long)o;
}

static void check_decodes(const char *enc, const struct tus_meta_pair *pairs,
			  size_t n)
{
	unsigned char *buf = malloc(strlen(enc) + 1);
	const char *p = enc;

	check(buf != NULL);
	for (size_t i = 0; i < n; i++) {
		size_t klen = strlen(pairs[i].key), vlen;
		long got;

		if (i > 0)
			check(*p++ == ',');
		check(strncmp(p, pairs[i].key, klen) == 0);
		p += klen;
		vlen = strcspn(p, ",");
		if (vlen > 0) {
			check(*p == ' ');
			p++;
			vlen--;
		}
		got = unbase64(p, vlen, buf);
		check(got >= 0 && (size_t)got == pairs[i].vlen);
		check(memcmp(buf, pairs[i].value, pairs[i].vlen) == 0);
		p += vlen;
	}
	check(*p == '\0');
	free(buf);
}

static void check_mime(const char *value, size_t len)
{
	char *name = strndup(value, len);
	const char *type;

	if (!name)
		return;
	type = meta_mime_type(name);
	check(type && strchr(type, '/'));
	for (const char *c = type; *c; c++)
		check(*c > 0x20 && *c < 0x7f && *c != ',');
	free(name);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const keys[MAX_PAIRS] = {
	    "filename", "filetype", "taskId", "language", "relativePath"};
	struct tus_meta_pair pairs[MAX_PAIRS];
	const char *p, *end;
	char *enc;
	size_t n = 0;
	uint8_t sep;

	if (size < 1)
		return 0;
	/* The first byte separates the values in the rest. */
	sep = data[0];
	p = (const char *)data + 1;
	end = (const char *)data + size;
	while (n < MAX_PAIRS) {
		const char *cut = memchr(p, sep, (size_t)(end - p));
		size_t len = (size_t)((cut ? cut : end) - p);

		pairs[n] = (struct tus_meta_pair){keys[n], p, len};
		check_mime(p, len);
		n++;
		if (!cut)
			break;
		p = cut + 1;
	}

	enc = tus_metadata_encode(pairs, n);
	if (!enc)
		return 0;
	for (const char *c = enc; *c; c++)
		check(*c == ' ' || *c == ',' || *c == '=' || sextet(*c) >= 0);
	check_decodes(enc, pairs, n);
	free(enc);
	return 0;
}
