/*
 * Command line and options. Values are parsed and checked here, once, so
 * the rest of the daemon reads plain fields. The token is read from a file
 * or the environment, never from argv where any user's ps could see it.
 */
#include "tusfs_setup.h"
#include "fuse/config.h"
#include "core/catalog.h"
#include "core/task.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define OPT(t, field)                                                          \
	{                                                                      \
		t, offsetof(struct config, field), 0                           \
	}

static const struct fuse_opt opt_spec[] = {
    OPT("chunk_size=%s", chunk_size_opt),
    OPT("max_uploads=%s", max_uploads_opt),
    OPT("language=%s", language),
    OPT("state_dir=%s", state_dir),
    OPT("auth_file=%s", auth_file),
    OPT("log_level=%s", log_level_opt),
    OPT("fsync=%s", fsync_opt),
    OPT("cache_size=%s", cache_size_opt),
    OPT("stall_timeout=%s", stall_timeout_opt),
    OPT("answer_timeout=%s", answer_timeout_opt),
    OPT("max_rate=%s", max_rate_opt),
    OPT("task_url=%s", task_url),
    OPT("progress_url=%s", progress_url),
    OPT("transcripts=%s", transcripts_opt),
    OPT("task_timeout=%s", task_timeout_opt),
    OPT("max_task_json=%s", max_task_json_opt),
    OPT("max_depth=%s", max_depth_opt),
    OPT("temp_names=%s", temp_names),
    OPT("cafile=%s", cafile),
    {"delete_remote", offsetof(struct config, delete_remote), 1},
    {"insecure", offsetof(struct config, insecure), 1},
    FUSE_OPT_END,
};

static void complain(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static void complain(const char *fmt, ...)
{
	va_list ap;

	fputs("tusfs: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* A seconds option (NULL: not given), 1 to max, into *out: 0, or -EINVAL
 * after saying what is wrong. */
static int parse_seconds(const char *opt, const char *name, uint64_t max,
			 long *out)
{
	uint64_t n;

	if (!opt)
		return 0;
	if (config_parse_size(opt, &n) < 0 || n < 1 || n > max) {
		complain("invalid %s '%s' (1 to %llu seconds)", name, opt,
			 (unsigned long long)max);
		return -EINVAL;
	}
	*out = (long)n;
	return 0;
}

int config_parse_size(const char *s, uint64_t *out)
{
	unsigned long long v;
	unsigned shift = 0;
	char *end;

	if (!isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -EINVAL;
	switch (toupper((unsigned char)*end)) {
	case 'K':
		shift = 10;
		break;
	case 'M':
		shift = 20;
		break;
	case 'G':
		shift = 30;
		break;
	case '\0':
		break;
	default:
		return -EINVAL;
	}
	if (shift) {
		end++;
		/* "50M", "50MB" and "50MiB" all mean 50 * 2^20. */
		if (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0)
			end += strlen(end);
	}
	if (*end || v > (UINT64_MAX >> shift))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

/* An http(s) URL with "{id}" in it. */
static bool task_route_ok(const char *url)
{
	return (strncmp(url, "http://", 7) == 0 ||
		strncmp(url, "https://", 8) == 0) &&
	       strstr(url, "{id}") && !strpbrk(url, " \t\r\n");
}

/* The temporary-name patterns: the default, or a list that parses. */
static int check_temp_names(struct config *cfg)
{
	if (!cfg->temp_names) {
		cfg->temp_names = strdup(CONFIG_DEFAULT_TEMP_NAMES);
		return cfg->temp_names ? 0 : -ENOMEM;
	}
	if (catalog_temp_names_check(cfg->temp_names) < 0) {
		complain("invalid temp_names '%s' (fnmatch patterns separated "
			 "by '/', e.g. *.part/*.tmp; empty for none)",
			 cfg->temp_names);
		return -EINVAL;
	}
	return 0;
}

static int parse_task_options(struct config *cfg)
{
	int rc;

	if (cfg->transcripts_opt) {
		if (strcmp(cfg->transcripts_opt, "on") != 0 &&
		    strcmp(cfg->transcripts_opt, "off") != 0) {
			complain("invalid transcripts '%s' (on or off)",
				 cfg->transcripts_opt);
			return -EINVAL;
		}
		cfg->transcripts = strcmp(cfg->transcripts_opt, "on") == 0;
	}
	if (cfg->task_url && !task_route_ok(cfg->task_url)) {
		complain("invalid task_url '%s' (an http:// or https:// URL "
			 "with {id} where the taskId goes)",
			 cfg->task_url);
		return -EINVAL;
	}
	if (cfg->progress_url && *cfg->progress_url &&
	    !task_route_ok(cfg->progress_url)) {
		complain("invalid progress_url '%s' (an http:// or https:// "
			 "URL with {id}, or empty for none)",
			 cfg->progress_url);
		return -EINVAL;
	}
	if (cfg->delete_remote && !cfg->transcripts) {
		complain("delete_remote needs transcripts=on (it deletes "
			 "transcription tasks)");
		return -EINVAL;
	}
	rc = check_temp_names(cfg);
	if (rc < 0)
		return rc;
	if (parse_seconds(cfg->task_timeout_opt, "task_timeout", 30 * 86400,
			  &cfg->task_timeout_s) < 0)
		return -EINVAL;
	if (cfg->max_task_json_opt &&
	    (config_parse_size(cfg->max_task_json_opt, &cfg->max_task_json) <
		 0 ||
	     cfg->max_task_json < 1024 || cfg->max_task_json > TASK_MAX_BODY)) {
		complain("invalid max_task_json '%s' (1K to 256M)",
			 cfg->max_task_json_opt);
		return -EINVAL;
	}
	return 0;
}

int config_parse_rate(const char *s, uint64_t *rate)
{
	if (strcmp(s, "off") == 0 || strcmp(s, "0") == 0) {
		*rate = 0;
		return 0;
	}
	if (config_parse_size(s, rate) < 0 || *rate < 1024)
		return -EINVAL;
	return 0;
}

/* Takes the first non-option argument as the endpoint. */
static int opt_proc(void *data, const char *arg, int key,
		    struct fuse_args *outargs)
{
	struct config *cfg = data;

	(void)outargs;
	if (key == FUSE_OPT_KEY_NONOPT && !cfg->endpoint) {
		cfg->endpoint = strdup(arg);
		return cfg->endpoint ? 0 : -1;
	}
	return 1;
}

int config_parse(struct config *cfg, struct fuse_args *args)
{
	uint64_t n;

	memset(cfg, 0, sizeof(*cfg));
	cfg->chunk_size = CONFIG_DEFAULT_CHUNK;
	cfg->max_uploads = CONFIG_DEFAULT_UPLOADS;
	cfg->log_level = LOG_LEVEL_INFO;
	cfg->cache_size = CONFIG_DEFAULT_CACHE;
	cfg->stall_timeout_s = CONFIG_DEFAULT_STALL_S;
	cfg->answer_timeout_s = CONFIG_DEFAULT_ANSWER_S;
	cfg->transcripts = true;
	cfg->task_timeout_s = CONFIG_DEFAULT_TASK_TIMEOUT_S;
	cfg->max_task_json = TASK_DEFAULT_BODY;
	cfg->max_depth = CONFIG_DEFAULT_DEPTH;
	if (fuse_opt_parse(args, cfg, opt_spec, opt_proc) < 0)
		return -EINVAL;
	if (cfg->chunk_size_opt &&
	    (config_parse_size(cfg->chunk_size_opt, &cfg->chunk_size) < 0 ||
	     cfg->chunk_size < CONFIG_MIN_CHUNK ||
	     cfg->chunk_size > CONFIG_MAX_CHUNK)) {
		complain("invalid chunk_size '%s' (4K to 4G, e.g. 50M)",
			 cfg->chunk_size_opt);
		return -EINVAL;
	}
	if (cfg->max_uploads_opt) {
		if (config_parse_size(cfg->max_uploads_opt, &n) < 0 || n < 1 ||
		    n > CONFIG_MAX_UPLOADS) {
			complain("invalid max_uploads '%s' (1 to %d)",
				 cfg->max_uploads_opt, CONFIG_MAX_UPLOADS);
			return -EINVAL;
		}
		cfg->max_uploads = (unsigned)n;
	}
	if (cfg->max_depth_opt) {
		if (config_parse_size(cfg->max_depth_opt, &n) < 0 || n < 1 ||
		    n > CONFIG_MAX_DEPTH) {
			complain("invalid max_depth '%s' (1 to %d)",
				 cfg->max_depth_opt, CONFIG_MAX_DEPTH);
			return -EINVAL;
		}
		cfg->max_depth = (unsigned)n;
	}
	if (cfg->cache_size_opt &&
	    config_parse_size(cfg->cache_size_opt, &cfg->cache_size) < 0) {
		complain("invalid cache_size '%s' (e.g. 0, 500M, 2G)",
			 cfg->cache_size_opt);
		return -EINVAL;
	}
	if (parse_seconds(cfg->stall_timeout_opt, "stall_timeout", 3600,
			  &cfg->stall_timeout_s) < 0 ||
	    parse_seconds(cfg->answer_timeout_opt, "answer_timeout", 86400,
			  &cfg->answer_timeout_s) < 0)
		return -EINVAL;
	if (cfg->max_rate_opt &&
	    config_parse_rate(cfg->max_rate_opt, &cfg->max_rate) < 0) {
		complain("invalid max_rate '%s' (bytes per second, at least "
			 "1K, e.g. 4M; off for none)",
			 cfg->max_rate_opt);
		return -EINVAL;
	}
	if (cfg->log_level_opt &&
	    log_level_parse(cfg->log_level_opt, &cfg->log_level) < 0) {
		complain("invalid log_level '%s' (error, warn, info, debug)",
			 cfg->log_level_opt);
		return -EINVAL;
	}
	if (cfg->fsync_opt) {
		if (strcmp(cfg->fsync_opt, "local") != 0 &&
		    strcmp(cfg->fsync_opt, "remote") != 0) {
			complain("invalid fsync '%s' (local or remote)",
				 cfg->fsync_opt);
			return -EINVAL;
		}
		cfg->fsync_local = strcmp(cfg->fsync_opt, "local") == 0;
	}
	if (cfg->language && !*cfg->language) {
		complain("empty language");
		return -EINVAL;
	}
	return parse_task_options(cfg);
}

/* A token goes into a header line: no control characters, not empty. */
static bool token_ok(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

/* Reads the token from path, refusing a file others can read. */
static int read_token(const char *path, char **out)
{
	char buf[4097];
	struct stat st;
	ssize_t len;
	size_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	int rc = 0;

	if (fd < 0) {
		rc = -errno;
		complain("cannot open auth_file '%s': %s", path,
			 strerror(errno));
		return rc;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		complain("auth_file '%s' is not a regular file", path);
		rc = -EINVAL;
		goto out;
	}
	if (st.st_mode & 077) {
		complain("auth_file '%s' is accessible by others (mode %03o); "
			 "chmod 600 it",
			 path, (unsigned)(st.st_mode & 0777));
		rc = -EACCES;
		goto out;
	}
	len = read(fd, buf, sizeof(buf) - 1);
	if (len < 0 || len == (ssize_t)sizeof(buf) - 1) {
		complain("cannot read auth_file '%s'", path);
		rc = -EINVAL;
		goto out;
	}
	n = (size_t)len;
	while (n > 0 && isspace((unsigned char)buf[n - 1]))
		n--;
	buf[n] = '\0';
	if (!token_ok(buf)) {
		complain("auth_file '%s' must hold one non-empty line without "
			 "control characters",
			 path);
		rc = -EINVAL;
		goto out;
	}
	*out = strdup(buf);
	if (!*out)
		rc = -ENOMEM;
out:
	explicit_bzero(buf, sizeof(buf));
	close(fd);
	return rc;
}

/* STATE/tusfs/<xxh3 of endpoint and mountpoint>: one per mount. */
static int default_state_dir(struct config *cfg, const char *mountpoint)
{
	const char *xdg = getenv("XDG_STATE_HOME");
	const char *home = getenv("HOME");
	char key[PATH_MAX * 2];
	int klen;
	XXH64_hash_t h;

	klen = snprintf(key, sizeof(key), "%s\n%s", cfg->endpoint, mountpoint);
	if (klen < 0 || (size_t)klen >= sizeof(key))
		return -ENAMETOOLONG;
	h = XXH3_64bits(key, (size_t)klen);
	if (xdg && *xdg)
		klen = asprintf(&cfg->state_dir, "%s/tusfs/%016llx", xdg,
				(unsigned long long)h);
	else if (home && *home)
		klen =
		    asprintf(&cfg->state_dir, "%s/.local/state/tusfs/%016llx",
			     home, (unsigned long long)h);
	else {
		complain("no state directory: set -o state_dir, XDG_STATE_HOME "
			 "or HOME");
		return -EINVAL;
	}
	if (klen < 0) {
		cfg->state_dir = NULL;
		return -ENOMEM;
	}
	return 0;
}

int config_finish(struct config *cfg, const char *mountpoint)
{
	char real[PATH_MAX];
	struct stat st;
	const char *env;

	if (stat(mountpoint, &st) < 0) {
		complain("mountpoint '%s': %s", mountpoint, strerror(errno));
		return -ENOENT;
	}
	if (!S_ISDIR(st.st_mode)) {
		complain("mountpoint '%s' is not a directory", mountpoint);
		return -ENOTDIR;
	}
	if (!realpath(mountpoint, real))
		return -errno;
	if (strncmp(cfg->endpoint, "http://", 7) != 0 &&
	    strncmp(cfg->endpoint, "https://", 8) != 0) {
		complain("endpoint '%s' is not an http:// or https:// URL",
			 cfg->endpoint);
		return -EINVAL;
	}
	if (cfg->cafile && access(cfg->cafile, R_OK) < 0) {
		complain("cafile '%s': %s", cfg->cafile, strerror(errno));
		return -EINVAL;
	}
	if (cfg->auth_file) {
		int rc = read_token(cfg->auth_file, &cfg->token);

		if (rc < 0)
			return rc;
	} else if ((env = getenv("TUSFS_TOKEN")) && *env) {
		if (!token_ok(env)) {
			complain("TUSFS_TOKEN holds a control character");
			return -EINVAL;
		}
		cfg->token = strdup(env);
		if (!cfg->token)
			return -ENOMEM;
	}
	if (!cfg->state_dir)
		return default_state_dir(cfg, real);
	return 0;
}

void config_clear(struct config *cfg)
{
	if (cfg->token) {
		explicit_bzero(cfg->token, strlen(cfg->token));
		free(cfg->token);
	}
	free(cfg->endpoint);
	free(cfg->language);
	free(cfg->state_dir);
	free(cfg->auth_file);
	free(cfg->chunk_size_opt);
	free(cfg->max_uploads_opt);
	free(cfg->log_level_opt);
	free(cfg->fsync_opt);
	free(cfg->cache_size_opt);
	free(cfg->stall_timeout_opt);
	free(cfg->answer_timeout_opt);
	free(cfg->max_rate_opt);
	free(cfg->max_task_json_opt);
	free(cfg->max_depth_opt);
	free(cfg->task_url);
	free(cfg->progress_url);
	free(cfg->transcripts_opt);
	free(cfg->task_timeout_opt);
	free(cfg->temp_names);
	free(cfg->cafile);
	memset(cfg, 0, sizeof(*cfg));
}

void config_print_help(void)
{
	printf(
	    "usage: tusfs [options] ENDPOINT MOUNTPOINT\n"
	    "       tusfs wait MOUNTPOINT [--timeout SECONDS] [--transcripts]\n"
	    "       tusfs status MOUNTPOINT [--json]\n"
	    "       tusfs pause MOUNTPOINT [PATH...]\n"
	    "       tusfs resume MOUNTPOINT [PATH...]\n"
	    "       tusfs limit MOUNTPOINT RATE|off\n"
	    "\n"
	    "Mounts the TUS upload endpoint ENDPOINT (e.g.\n"
	    "https://host/uploads/files/) at MOUNTPOINT: files copied in\n"
	    "are uploaded in resumable chunks.\n"
	    "\n"
	    "tusfs options:\n"
	    "    -o chunk_size=SIZE     bytes per PATCH (default 50M; K/M/G)\n"
	    "    -o max_uploads=N       files uploading at once (default 4)\n"
	    "    -o language=CODE       transcription language (default: "
	    "auto)\n"
	    "    -o state_dir=DIR       spool and state (default:\n"
	    "                           $XDG_STATE_HOME/tusfs/<mount id>)\n"
	    "    -o auth_file=FILE      file holding the API key (mode 0600);\n"
	    "                           TUSFS_TOKEN in the environment also "
	    "works\n"
	    "    -o log_level=LEVEL     error, warn, info (default), debug\n"
	    "    -o fsync=MODE          remote (default): fsync waits for the\n"
	    "                           server; local: only syncs the spool\n"
	    "    -o cache_size=SIZE     spool of uploaded files kept for\n"
	    "                           reading back (default 1G; 0: none)\n"
	    "    -o stall_timeout=S     abort and retry a transfer with no\n"
	    "                           progress for S seconds (default 60)\n"
	    "    -o max_rate=RATE       bytes per second for all uploads\n"
	    "                           together (K/M/G; default off);\n"
	    "                           tusfs limit changes it live\n"
	    "    -o answer_timeout=S    wait S seconds for the answer to an\n"
	    "                           upload's last byte, while the server\n"
	    "                           checks the file (default 900)\n"
	    "    -o transcripts=on|off  poll transcription tasks and show\n"
	    "                           NAME.txt/.srt/.vtt/.json (default on;\n"
	    "                           off for plain TUS servers)\n"
	    "    -o task_url=URL        task route, {id} is the taskId\n"
	    "                           (default ORIGIN/task/{id})\n"
	    "    -o progress_url=URL    progress route (default\n"
	    "                           ORIGIN/tasks/{id}/progress; empty: "
	    "none)\n"
	    "    -o task_timeout=S      report a task that has not appeared\n"
	    "                           S seconds after its upload as "
	    "missing\n"
	    "                           (default 3600)\n"
	    "    -o max_task_json=SIZE  longest task answer read (default\n"
	    "                           32M, up to 256M)\n"
	    "    -o max_depth=N         directory levels allowed below the\n"
	    "                           mount (default 64)\n"
	    "    -o temp_names=PATS     names held back until renamed:\n"
	    "                           fnmatch patterns separated by '/'\n"
	    "                           (default: rsync, download, GIO and\n"
	    "                           editor temporaries, see tusfs(1);\n"
	    "                           empty: none)\n"
	    "    -o delete_remote       unlinking an uploaded file also\n"
	    "                           deletes its transcription task\n"
	    "    -o cafile=FILE         PEM bundle of the CAs trusted for an\n"
	    "                           https endpoint (default: the "
	    "system's)\n"
	    "    -o insecure            do not verify the server's TLS\n"
	    "                           certificate (logged; tests only)\n"
	    "    -V, --version          print versions and exit\n"
	    "\n"
	    "tusfs wait blocks until every upload on the mount is confirmed\n"
	    "(with --transcripts: and every transcription has finished)\n"
	    "(exit 0); exit 1 lists uploads or transcriptions that failed, 2\n"
	    "means the timeout passed, 3 a usage error or not a tusfs mount.\n"
	    "tusfs status prints each file's size, upload state, progress,\n"
	    "rate, ETA and transcription (--json: as an array).\n"
	    "\n");
}
