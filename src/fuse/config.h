/*
 * The daemon's configuration: the command line and -o options, validated
 * and completed (token loaded, state directory chosen) before anything is
 * mounted. Immutable once the filesystem runs.
 */
#ifndef TUSFS_CONFIG_H
#define TUSFS_CONFIG_H

#include "tusfs_setup.h"
#include "core/log.h"

#include <fuse.h>
#include <stdbool.h>
#include <stdint.h>

#define CONFIG_DEFAULT_CHUNK	      (50ULL * 1024 * 1024)
#define CONFIG_DEFAULT_UPLOADS	      4
#define CONFIG_MIN_CHUNK	      (4ULL * 1024)
#define CONFIG_MAX_CHUNK	      (4ULL * 1024 * 1024 * 1024)
#define CONFIG_MAX_UPLOADS	      64
#define CONFIG_DEFAULT_CACHE	      (1024ULL * 1024 * 1024)
#define CONFIG_DEFAULT_STALL_S	      60
#define CONFIG_DEFAULT_ANSWER_S	      900
#define CONFIG_DEFAULT_TASK_TIMEOUT_S 3600
#define CONFIG_DEFAULT_DEPTH	      64
/* "a/" repeated fills CATALOG_MAX_RELPATH at this depth. */
#define CONFIG_MAX_DEPTH 2048
/* Temporary names tools write before renaming to the final one: rsync's
 * .NAME.<six random characters>, downloads, GIO's .goutputstream-*, editors'
 * backups and locks, macOS's ._ files. fnmatch patterns separated by '/', the
 * one character no name can hold (split so that "??" "/" is no trigraph). */
#define CONFIG_DEFAULT_TEMP_NAMES                                              \
	".*.??????"                                                            \
	"/*.part/*.partial/.goutputstream-*/*.crdownload/*.tmp/*~/.#*/._*"

struct config {
	char *endpoint;
	uint64_t chunk_size;
	unsigned max_uploads;
	char *language;
	char *state_dir;
	char *auth_file;
	/* The API key, from auth_file or TUSFS_TOKEN; never printed. */
	char *token;
	enum log_level log_level;
	bool fsync_local;
	/* Bytes of uploaded files' spools kept (-o cache_size). */
	uint64_t cache_size;
	/* Seconds without progress before a transfer is retried. */
	long stall_timeout_s;
	/* Seconds the answer to an upload's last byte may take. */
	long answer_timeout_s;
	/* Bytes per second for every upload together (-o max_rate); 0:
	 * no limit. */
	uint64_t max_rate;
	/* The task routes ("{id}" is the taskId); NULL until main fills in
	 * the defaults from the endpoint's origin. progress_url "" is none. */
	char *task_url;
	char *progress_url;
	/* Transcript sidecars and task polling (-o transcripts=on|off). */
	bool transcripts;
	/* Seconds a task may stay missing after its upload. */
	long task_timeout_s;
	/* Longest task answer read (-o max_task_json). */
	uint64_t max_task_json;
	/* Directory levels allowed below the root (-o max_depth). */
	unsigned max_depth;
	/* Temporary-name patterns (-o temp_names), '/'-separated; "" none. */
	char *temp_names;
	/* Unlinking an uploaded file also deletes its task (-o
	 * delete_remote); an int, as fuse_opt sets flags. */
	int delete_remote;
	/* CAs for https (-o cafile); NULL: the system's store. */
	char *cafile;
	/* -o insecure: no TLS verification (an int, as fuse_opt sets it). */
	int insecure;
	/* Raw option strings, as fuse_opt stores them. */
	char *chunk_size_opt;
	char *max_uploads_opt;
	char *log_level_opt;
	char *fsync_opt;
	char *cache_size_opt;
	char *stall_timeout_opt;
	char *answer_timeout_opt;
	char *max_rate_opt;
	char *transcripts_opt;
	char *task_timeout_opt;
	char *max_task_json_opt;
	char *max_depth_opt;
};

/*
 * Parses tusfs's own options out of args, leaving FUSE's (and the
 * mountpoint) in place for fuse_parse_cmdline(). Returns 0, or -EINVAL after
 * printing what is wrong.
 */
int config_parse(struct config *cfg, struct fuse_args *args);

/*
 * Parses a bandwidth limit: a size per second (K, M, G) of at least 1K, or
 * "off" or "0" for none. 0 or -EINVAL.
 */
int config_parse_rate(const char *s, uint64_t *rate);

/*
 * Completes cfg for mounting at mountpoint: checks the mountpoint, loads
 * the token, picks the default state directory. 0, or -errno after printing
 * what is wrong.
 */
int config_finish(struct config *cfg, const char *mountpoint);

void config_clear(struct config *cfg);

/* Parses "50M", "1048576", "64K", "1G" (powers of 1024). 0 or -EINVAL. */
int config_parse_size(const char *s, uint64_t *out);

/* Prints the tusfs options part of --help. */
void config_print_help(void);

#endif
