/*
 * tusfs: wiring only. Parse the configuration, check the endpoint speaks
 * TUS (before anything is mounted, so a bad endpoint leaves nothing behind),
 * mount, daemonize, start the upload workers, serve, and tear down in
 * reverse.
 */
#include "tusfs_setup.h"
#include "fuse/config.h"
#include "core/engine.h"
#include "fuse/fs.h"
#include "tus/curl.h"
#include "core/log.h"
#include "tus/tus.h"
#include "cli/cli.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CONNECT_TIMEOUT_S 15

/* A file's last reference went: its spool and transcripts go too. */
static void remove_local_files(struct node *n, void *arg)
{
	const struct tusfs *t = arg;

	spool_remove(t->spool, n->ino);
	if (t->poller)
		poller_forget(t->poller, n);
}

/* Fills in the task routes the options left out, from the endpoint. */
static int task_routes(struct config *cfg, const char *origin)
{
	if (!cfg->task_url &&
	    asprintf(&cfg->task_url, "%s/task/{id}", origin) < 0)
		cfg->task_url = NULL;
	if (!cfg->progress_url &&
	    asprintf(&cfg->progress_url, "%s/tasks/{id}/progress", origin) < 0)
		cfg->progress_url = NULL;
	return cfg->task_url && cfg->progress_url ? 0 : -ENOMEM;
}

/*
 * OPTIONS on the endpoint. 0; -EAGAIN when it cannot be reached now; or
 * -errno when it is unusable (not TUS, refused), after saying why.
 */
static int discover(const struct tus_http_curl_config *hc, const char *endpoint,
		    struct tus_server *srv)
{
	struct tus_http *http = tus_http_curl_create(hc);
	struct tus_client *tus;
	struct tus_status st;
	enum tus_outcome o;
	int rc = -ENOMEM;

	if (!http)
		return rc;
	tus = tus_client_create(http, endpoint, &rc);
	if (tus) {
		rc = 0;
		o = tus_discover(tus, srv, &st);
		if (o != TUS_OK) {
			fprintf(stderr, "tusfs: cannot use endpoint '%s': %s\n",
				endpoint, st.message);
			rc = o == TUS_RETRY ? -EAGAIN : -EIO;
		}
	}
	tus_client_free(tus);
	tus_http_free(http);
	return rc;
}

/*
 * STATE/server remembers what the endpoint offered at the last mount, so
 * a mount works while the server is down: the sidecars and the spool are
 * local, and uploads resume when it is back. It also remembers the
 * largest request body the endpoint took after a 413 refused a larger one
 * (a proxy's limit), so the next mount starts below it. One line,
 * "tus extensions=E max_size=M[ max_body=B]".
 */
struct server_memory {
	struct tus_server server;
	uint64_t max_body; /* 0: no body was ever refused */
	const char *state_dir;
};

/* Reads one "KEY=number" field at *p, which it moves past: 0 or -EINVAL. */
static int field(const char **p, const char *key, unsigned long long *out)
{
	char *end;

	if (strncmp(*p, key, strlen(key)) != 0)
		return -EINVAL;
	*p += strlen(key);
	if (!isdigit((unsigned char)**p))
		return -EINVAL;
	errno = 0;
	*out = strtoull(*p, &end, 10);
	*p = end;
	return errno ? -EINVAL : 0;
}

static int parse_server(const char *line, struct server_memory *m)
{
	unsigned long long ext, max_size, max_body = 0;
	const char *p = line;

	if (field(&p, "tus extensions=", &ext) < 0 || ext > UINT_MAX ||
	    field(&p, " max_size=", &max_size) < 0 ||
	    (*p == ' ' && field(&p, " max_body=", &max_body) < 0) ||
	    (*p != '\n' && *p != '\0'))
		return -EINVAL;
	m->server.extensions = (unsigned)ext;
	m->server.max_size = max_size;
	m->max_body = max_body;
	return 0;
}

static int load_server(struct server_memory *m)
{
	char path[4096], line[160];
	int n = snprintf(path, sizeof(path), "%s/server", m->state_dir);
	FILE *f;
	bool got;

	if (n < 0 || (size_t)n >= sizeof(path))
		return -ENAMETOOLONG;
	f = fopen(path, "re");
	if (!f)
		return -errno;
	got = fgets(line, sizeof(line), f) != NULL;
	/* Read only: a failed close loses nothing. */
	(void)fclose(f);
	return got ? parse_server(line, m) : -EINVAL;
}

/* Best effort: without the file, an offline mount is refused later. */
static void save_server(const struct server_memory *m)
{
	char path[4096], tmp[4100];
	int n = snprintf(path, sizeof(path), "%s/server", m->state_dir);
	FILE *f;
	int fd;

	if (n < 0 || (size_t)n >= sizeof(path))
		return;
	snprintf(tmp, sizeof(tmp), "%s.new", path);
	/* 0600 whatever the umask, like everything in the state directory. */
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	f = fd < 0 ? NULL : fdopen(fd, "w");
	if (!f) {
		if (fd >= 0)
			close(fd);
		return;
	}
	fprintf(f, "tus extensions=%u max_size=%llu", m->server.extensions,
		(unsigned long long)m->server.max_size);
	if (m->max_body)
		fprintf(f, " max_body=%llu", (unsigned long long)m->max_body);
	fputc('\n', f);
	if (fclose(f) != 0 || rename(tmp, path) != 0) {
		log_warn("cannot save '%s': %s", path, strerror(errno));
		unlink(tmp);
	}
}

/* The mount's; the engine's learned_body outlives build(). */
static struct server_memory memory;

/* The engine learned a smaller body limit: the next mount starts there. */
static void learned_body(void *arg, uint64_t max_body)
{
	struct server_memory *m = arg;

	m->max_body = max_body;
	save_server(m);
}

static int serve(struct fuse *fuse, const struct fuse_cmdline_opts *fopts)
{
	struct fuse_loop_config *lc;
	int rc;

	if (fopts->singlethread)
		return fuse_loop(fuse);
	lc = fuse_loop_cfg_create();
	if (!lc)
		return -ENOMEM;
	fuse_loop_cfg_set_clone_fd(lc, (unsigned)fopts->clone_fd);
	fuse_loop_cfg_set_max_threads(lc, fopts->max_threads);
	rc = fuse_loop_mt(fuse, lc);
	fuse_loop_cfg_destroy(lc);
	return rc;
}

/* The workers' transport settings: their strings (the token, the origin)
 * are borrowed, so these live as long as the threads. */
static struct tus_http_curl_config curl_settings;

/* The transport factory the engine and the poller get: libcurl, with the
 * caller's abort flag. */
static struct tus_http *curl_transport(void *arg, const atomic_int *abort_all)
{
	struct tus_http_curl_config hc =
	    *(const struct tus_http_curl_config *)arg;

	hc.abort_all = abort_all;
	return tus_http_curl_create(&hc);
}

/*
 * Builds the modules into t: the transport settings, discovery (or what
 * the endpoint offered last time), the spool, the catalog restored from
 * the journal, the poller and the engine, with their work resumed but
 * their threads not started. origin must outlive the threads: their
 * transports are made from it. 0, or -errno after saying why; whatever
 * was built is left in t for release().
 */
static int build(struct config *cfg, char *origin, size_t originsz,
		 struct tusfs *t, struct journal_stats *js)
{
	struct tus_http_curl_config *hc = &curl_settings;
	struct engine_config ec = {
	    .endpoint = cfg->endpoint,
	    .chunk_size = cfg->chunk_size,
	    .workers = cfg->max_uploads,
	    .language = cfg->language,
	    .cache_size = cfg->cache_size,
	    .temp_names = cfg->temp_names,
	    .answer_timeout_s = cfg->answer_timeout_s,
	    .max_rate = cfg->max_rate,
	};
	struct poller_config pc = {
	    .transcripts = cfg->transcripts,
	    .task_timeout_s = cfg->task_timeout_s,
	    .max_task_json = (size_t)cfg->max_task_json,
	    .delete_remote = cfg->delete_remote,
	    .state_dir = cfg->state_dir,
	};
	uint64_t max_id = 0;
	bool discovered, remembered;
	int rc;

	if (tus_url_origin(cfg->endpoint, origin, originsz) < 0) {
		fprintf(stderr, "tusfs: cannot parse endpoint '%s'\n",
			cfg->endpoint);
		return -EINVAL;
	}
	*hc = (struct tus_http_curl_config){
	    .token = cfg->token,
	    .cafile = cfg->cafile,
	    .insecure = cfg->insecure,
	    .connect_timeout_s = CONNECT_TIMEOUT_S,
	    .stall_timeout_s = cfg->stall_timeout_s,
	    .auth_origin = origin,
	};
	if (hc->insecure)
		log_warn("-o insecure: the server's TLS certificate is not "
			 "verified; anyone on the path can read the uploads "
			 "and the API key");
	ec.transport = pc.transport = (struct transport_factory){
	    .create = curl_transport,
	    .arg = hc,
	    .stall_timeout_s = hc->stall_timeout_s,
	};
	if (task_routes(cfg, origin) < 0)
		return -ENOMEM;
	pc.task_url = cfg->task_url;
	pc.progress_url = cfg->progress_url;
	memory.state_dir = cfg->state_dir;
	remembered = load_server(&memory) == 0;
	rc = discover(hc, cfg->endpoint, &t->server);
	discovered = rc == 0;
	if (rc == -EAGAIN && remembered) {
		t->server = memory.server;
		fprintf(stderr, "tusfs: mounting with what the endpoint "
				"offered last time; uploads go on when it is "
				"back\n");
	} else if (rc < 0) {
		return rc;
	}
	memory.server = t->server;
	if (!remembered)
		memory.max_body = 0;
	ec.server = t->server;
	if (memory.max_body && memory.max_body < ec.chunk_size) {
		ec.chunk_size = memory.max_body;
		log_info("sending at most %llu bytes per request: the endpoint "
			 "refused more before",
			 (unsigned long long)ec.chunk_size);
	}
	ec.learned = learned_body;
	ec.learned_arg = &memory;

	t->spool = spool_open_dir(cfg->state_dir, &max_id, &rc);
	if (!t->spool) {
		fprintf(stderr, "tusfs: cannot use state directory '%s': %s\n",
			cfg->state_dir, strerror(-rc));
		return rc;
	}
	if (discovered)
		save_server(&memory);
	t->cat = catalog_create(getuid(), getgid(), max_id + 1,
				remove_local_files, t);
	if (!t->cat)
		return -ENOMEM;
	t->journal = journal_open(cfg->state_dir, t->cat, &rc);
	if (!t->journal || (rc = journal_load(t->journal, t->spool, js)) < 0) {
		fprintf(stderr, "tusfs: cannot load the journal in '%s': %s\n",
			cfg->state_dir, strerror(-rc));
		return rc;
	}
	ec.journal = t->journal;
	pc.journal = t->journal;
	t->poller = poller_create(&pc, t->cat, &rc);
	if (!t->poller) {
		fprintf(stderr, "tusfs: cannot use state directory '%s': %s\n",
			cfg->state_dir, strerror(-rc));
		return rc;
	}
	ec.poller = t->poller;
	t->engine = engine_create(&ec, t->cat, t->spool, &rc);
	if (!t->engine)
		return rc;
	engine_resume(t->engine);
	poller_resume(t->poller);
	return 0;
}

/* Frees what build() made, in the order their references allow. */
static void release(struct tusfs *t)
{
	engine_free(t->engine);
	/* The journal may drop the last reference of a node, whose free
	 * hook asks the poller to remove its transcripts. */
	journal_free(t->journal);
	poller_free(t->poller);
	catalog_free(t->cat);
	spool_free(t->spool);
}

/* Mounts t, starts its threads and serves until unmounted. */
static int mount_and_serve(const struct config *cfg, struct tusfs *t,
			   const struct journal_stats *js,
			   struct fuse_args *args,
			   const struct fuse_cmdline_opts *fopts)
{
	struct fuse *fuse =
	    fuse_new(args, fs_operations(), sizeof(struct fuse_operations), t);
	int rc = -EIO;

	if (!fuse)
		return rc;
	if (fuse_mount(fuse, fopts->mountpoint) != 0)
		goto out_destroy;
	if (fuse_set_signal_handlers(fuse_get_session(fuse)) != 0)
		goto out_unmount;
	if (fuse_daemonize(fopts->foreground) != 0)
		goto out_signals;
	if (!fopts->foreground)
		log_use_syslog();
	rc = journal_start(t->journal);
	if (rc == 0)
		rc = engine_start(t->engine);
	if (rc == 0)
		rc = poller_start(t->poller);
	if (rc < 0) {
		log_error("cannot start threads: %s", strerror(-rc));
		goto out_threads;
	}
	log_info("mounted '%s' at '%s' (chunk %llu bytes, %u uploads; "
		 "%u entries restored, %u damaged, %u stray spool files "
		 "removed)",
		 cfg->endpoint, fopts->mountpoint,
		 (unsigned long long)cfg->chunk_size, cfg->max_uploads,
		 js->restored, js->damaged, js->orphans);
	rc = serve(fuse, fopts);
	/* libfuse reports the signal that ended the loop: a requested
	 * shutdown, not a failure. */
	if (rc > 0)
		log_info("signal %d: saving state and exiting", rc);
	rc = rc < 0 ? -EIO : 0;
out_threads:
	poller_stop(t->poller);
	engine_stop(t->engine);
	journal_stop(t->journal);
out_signals:
	fuse_remove_signal_handlers(fuse_get_session(fuse));
out_unmount:
	fuse_unmount(fuse);
out_destroy:
	fuse_destroy(fuse);
	return rc;
}

/* Wires the modules together, mounts and serves until unmounted. */
static int run(struct config *cfg, struct fuse_args *args,
	       const struct fuse_cmdline_opts *fopts)
{
	struct tusfs t = {.chunk_size = cfg->chunk_size,
			  .fsync_local = cfg->fsync_local,
			  .max_depth = cfg->max_depth};
	struct journal_stats js = {0};
	char origin[512];
	int rc = build(cfg, origin, sizeof(origin), &t, &js);

	if (rc == 0)
		rc = mount_and_serve(cfg, &t, &js, args, fopts);
	release(&t);
	return rc;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts fopts = {0};
	struct config cfg;
	int ret = 1;

	if (argc > 1 && strcmp(argv[1], "wait") == 0)
		return wait_main(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "status") == 0)
		return status_main(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "limit") == 0)
		return limit_main(argc - 1, argv + 1);
	if (argc > 1 &&
	    (strcmp(argv[1], "pause") == 0 || strcmp(argv[1], "resume") == 0))
		return pause_main(argc - 1, argv + 1);

	if (config_parse(&cfg, &args) < 0)
		goto out;
	/* The kernel checks modes against the caller, so the mount is as
	 * private as its files' modes (and only the owner's without
	 * allow_other, libfuse's default). */
	if (fuse_opt_add_arg(&args, "-odefault_permissions") != 0)
		goto out;
	if (fuse_parse_cmdline(&args, &fopts) != 0)
		goto out;
	if (fopts.show_help) {
		config_print_help();
		fuse_cmdline_help();
		fuse_lib_help(&args);
		ret = 0;
		goto out;
	}
	if (fopts.show_version) {
		printf("tusfs %s\nlibfuse %s\n%s\n", TUSFS_VERSION,
		       fuse_pkgversion(), curl_version());
		ret = 0;
		goto out;
	}
	if (!cfg.endpoint || !fopts.mountpoint) {
		fprintf(stderr, "usage: tusfs [options] ENDPOINT MOUNTPOINT\n"
				"try 'tusfs --help' for more information\n");
		goto out;
	}
	if (config_finish(&cfg, fopts.mountpoint) < 0)
		goto out;
	log_set_level(cfg.log_level);
	log_set_secret(cfg.token);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, "tusfs: cannot initialise libcurl\n");
		goto out;
	}
	ret = run(&cfg, &args, &fopts) == 0 ? 0 : 1;
	curl_global_cleanup();
out:
	log_set_secret(NULL);
	free(fopts.mountpoint);
	fuse_opt_free_args(&args);
	config_clear(&cfg);
	return ret;
}
