# Shared by every integration test: a reference backend on loopback, a
# tusfs mount in the test's own temp dir, ways to wait for and inspect what
# the server stored, and a teardown that always unmounts, stops both
# processes and fails the test on any sanitizer report.

REPO=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)
BACKEND=$REPO/tests/backend
: "${TUSFS_BIN:=$REPO/build/ci-sanitize/tusfs}"
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}

common_setup() {
	T=$BATS_TEST_TMPDIR
	MNT=$T/mnt
	STORE=$T/store
	STATE=$T/state
	REQLOG=$T/requests.log
	DLOG=$T/daemon.log
	mkdir -p "$MNT" "$STORE"
	unset TUSFS_TOKEN
}

# backend_start [server.js options...]: sets PORT, ENDPOINT, BACKEND_PID.
# With --tls-cert the ENDPOINT is https.
backend_start() {
	local scheme=http
	case " $* " in *" --tls-cert "*) scheme=https ;; esac
	rm -f "$T/port"
	node "$BACKEND/server.js" --dir "$STORE" --log "$REQLOG" \
		--port-file "$T/port" "$@" >"$T/backend.out" 2>&1 &
	BACKEND_PID=$!
	for _ in $(seq 200); do
		[ -s "$T/port" ] && break
		sleep 0.05
	done
	[ -s "$T/port" ] || { cat "$T/backend.out"; return 1; }
	PORT=$(cat "$T/port")
	ENDPOINT=$scheme://127.0.0.1:$PORT/uploads/files/
}

# make_cert NAME: a self-signed certificate for 127.0.0.1, made now, as
# $T/NAME.pem (also its own CA) and $T/NAME.key.
make_cert() {
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
		-nodes -days 1 -subj "/CN=tusfs test $1" \
		-addext "subjectAltName=IP:127.0.0.1" \
		-keyout "$T/$1.key" -out "$T/$1.pem" 2>/dev/null
}

mounted() {
	grep -q " $MNT fuse" /proc/mounts
}

# tusfs_mount [comma-separated -o options]: foreground daemon, TUSFS_PID.
tusfs_mount() {
	local opts="state_dir=$STATE"
	[ -n "${1:-}" ] && opts="$opts,$1"
	# A leak is judged from the log (sanitizer_reported), not the status.
	LSAN_OPTIONS=${LSAN_OPTIONS:-exitcode=0} \
		"$TUSFS_BIN" -f -o "$opts" "$ENDPOINT" "$MNT" 2>>"$DLOG" &
	TUSFS_PID=$!
	for _ in $(seq 400); do
		mounted && return 0
		kill -0 "$TUSFS_PID" 2>/dev/null || break
		sleep 0.05
	done
	cat "$DLOG"
	return 1
}

tusfs_unmount() {
	if mounted; then
		fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT"
	fi
	if [ -n "${TUSFS_PID:-}" ]; then
		for _ in $(seq 400); do
			kill -0 "$TUSFS_PID" 2>/dev/null || break
			sleep 0.05
		done
		kill -9 "$TUSFS_PID" 2>/dev/null || true
		DAEMON_STATUS=0
		wait "$TUSFS_PID" 2>/dev/null || DAEMON_STATUS=$?
		TUSFS_PID=
	fi
	return 0
}

# backend_stop: stops the backend (if any) and waits for it.
backend_stop() {
	[ -n "${BACKEND_PID:-}" ] || return 0
	# A test may have frozen it (SIGSTOP); a stopped process would never
	# act on the TERM.
	kill -CONT "$BACKEND_PID" 2>/dev/null || true
	kill "$BACKEND_PID" 2>/dev/null || true
	wait "$BACKEND_PID" 2>/dev/null || true
	BACKEND_PID=
}

# sanitizer_reported LOG: whether LOG holds a sanitizer report against
# tusfs. A leak allocated by libfuse alone (every frame below the allocator
# in libfuse3.so) is not: libfuse 3.14 keeps a FUSE_INTERRUPT that arrives
# after its request was answered (a killed writer's FLUSH) until a later
# request drains it, and frees none left at exit. tests/valgrind.supp lets
# memcheck's view of libfuse's teardown through the same way.
sanitizer_reported() {
	[ -f "$1" ] || return 1
	grep -q 'runtime error:' "$1" && return 0
	grep -E 'ERROR: [A-Za-z]+Sanitizer' "$1" | grep -qv LeakSanitizer &&
		return 0
	grep -q 'ERROR: LeakSanitizer' "$1" || return 1
	awk '/^(Direct|Indirect) leak of/ { leaks++; in_leak = 1; next }
		in_leak && /^ *#[0-9]+ / {
			if ($1 != "#0" && $0 !~ /libfuse3\.so/) ours = 1
			next
		}
		{ in_leak = 0 }
		END { exit !(ours || leaks == 0) }' "$1"
}

common_teardown() {
	tusfs_unmount
	backend_stop
	if sanitizer_reported "$DLOG"; then
		cat "$DLOG"
		return 1
	fi
	# A daemon that had to be killed, or exited non-zero, fails the test.
	[ "${DAEMON_STATUS:-0}" -eq 0 ] || { echo "tusfs exited with $DAEMON_STATUS"; return 1; }
}

# What the server stored: id size offset sha256 filename filetype taskId
# relativePath, tab-separated (see tests/backend/inspect.js).
inspect() {
	node "$BACKEND/inspect.js" "$@" "$STORE"
}

# wait_complete COUNT [timeout s]: until COUNT uploads are complete.
wait_complete() {
	local deadline=$((SECONDS + ${2:-60})) n
	while [ "$SECONDS" -lt "$deadline" ]; do
		n=$(inspect --no-hash | awk -F'\t' '$2 != "-" && $2 == $3' | wc -l)
		[ "$n" -ge "$1" ] && return 0
		sleep 0.2
	done
	echo "only $n of $1 uploads completed"
	inspect --no-hash
	tail -n 30 "$DLOG"
	return 1
}

# wait_offset NAME BYTES [timeout s]: until the server holds BYTES of NAME.
wait_offset() {
	local deadline=$((SECONDS + ${3:-30}))
	while [ "$SECONDS" -lt "$deadline" ]; do
		inspect --no-hash |
			awk -F'\t' -v n="$1" -v b="$2" '$5 == n && $3 >= b { f = 1 } END { exit !f }' &&
			return 0
		sleep 0.1
	done
	echo "server never held $2 bytes of $1"
	inspect --no-hash
	return 1
}

sha() {
	sha256sum "$1" | cut -d' ' -f1
}

# assert_tree SRC: every file under SRC is on the server exactly once,
# complete, with its bytes, its name and (in a subfolder) its
# relativePath; and nothing else is. The server is read once: a batch of
# 500 files would otherwise hash the whole store 500 times.
assert_tree() {
	local stored
	stored=$(inspect) || return 1
	(cd "$1" && find . -type f -printf '%P\0' | xargs -0 -r sha256sum) |
		STORED=$stored awk -F'\t' '
		BEGIN {
			n = split(ENVIRON["STORED"], lines, "\n")
			for (i = 1; i <= n; i++) {
				split(lines[i], f, "\t")
				if (f[2] == f[3])
					have[f[5] "\t" f[8] "\t" f[4]]++
			}
		}
		{
			h = substr($0, 1, 64); rel = substr($0, 67)
			name = rel; sub(/.*\//, "", name)
			key = name "\t" (rel ~ /\// ? rel : "-") "\t" h
			if (have[key] != 1) { print "not stored once: " rel; bad = 1 }
			files++
		}
		END {
			if (n != files) { print "extra uploads: " n " on the server, " files " here"; bad = 1 }
			exit bad
		}' || { echo "$stored"; return 1; }
}

# assert_stored NAME SOURCE: the server has exactly SOURCE's bytes as NAME,
# complete, once.
assert_stored() {
	local line
	line=$(inspect | awk -F'\t' -v n="$1" '$5 == n')
	[ "$(printf '%s\n' "$line" | grep -c .)" -eq 1 ] ||
		{ echo "expected one upload named $1, got: $line"; return 1; }
	[ "$(cut -f4 <<<"$line")" = "$(sha "$2")" ] ||
		{ echo "hash mismatch for $1: $line"; return 1; }
	[ "$(cut -f2 <<<"$line")" = "$(stat -c %s "$2")" ] ||
		{ echo "length mismatch for $1: $line"; return 1; }
}

# Request log lines of one method (JSON, one per line).
requests() {
	grep "\"method\":\"$1\"" "$REQLOG" || true
}

# tusfs_crash: kill -9 the daemon, as a crash would, and clear its mount.
tusfs_crash() {
	kill -9 "$TUSFS_PID"
	wait "$TUSFS_PID" 2>/dev/null || true
	TUSFS_PID=
	fusermount3 -uz "$MNT" 2>/dev/null || true
}

# stored_bytes NAME: bytes the server holds for NAME (its offset).
stored_bytes() {
	inspect --no-hash | awk -F'\t' -v n="$1" '$5 == n { print $3 }'
}

# patch_bytes: body bytes the server received in PATCH and POST requests,
# including those cut short.
patch_bytes() {
	node -e '
		let sum = 0;
		for (const l of require("fs").readFileSync(process.argv[1], "utf8").split("\n"))
			if (l) { const r = JSON.parse(l); if (r.method === "PATCH" || r.method === "POST") sum += r.body_bytes; }
		console.log(sum);' "$REQLOG"
}

# entries [DIR]: ls of DIR (default the mount) without the .status sidecars
# every file has.
entries() {
	ls "${1:-$MNT}" | grep -v '\.status$' || true
}

# xattr NAME FILE: a user.tusfs.* attribute of FILE in the mount.
xattr() {
	getfattr --only-values -n "user.tusfs.$1" "$MNT/$2" 2>/dev/null
}

# --- Transcription tasks (server.js --transcriber, --task-*; BACKEND.md 2) ---
# Requests carry the curl options in the array TASK_AUTH when it is set,
# e.g. TASK_AUTH=(-H "Authorization: Bearer $token").

# b64 TEXT: TEXT in base64, on one line (for Upload-Metadata).
b64() {
	printf '%s' "$1" | base64 -w0
}

# mkmedia OUT [--seconds N] [--seed S]: a deterministic 16 kHz mono WAV.
mkmedia() {
	node "$BACKEND/mkmedia.mjs" "$@"
}

# tus_upload FILE [KEY VALUE]...: uploads FILE in one POST
# (creation-with-upload) with that Upload-Metadata; prints its URL.
tus_upload() {
	local file=$1 meta="" hdr
	shift
	while [ $# -ge 2 ]; do
		meta="${meta:+$meta,}$1 $(b64 "$2")"
		shift 2
	done
	hdr=$(curl -sS -o /dev/null -D - -X POST -H 'Tus-Resumable: 1.0.0' \
		${TASK_AUTH[@]+"${TASK_AUTH[@]}"} \
		-H "Upload-Length: $(stat -c %s "$file")" ${meta:+-H "Upload-Metadata: $meta"} \
		-H 'Content-Type: application/offset+octet-stream' --data-binary "@$file" \
		"$ENDPOINT" | tr -d '\r')
	grep -q '^HTTP/[0-9.]* 201' <<<"$hdr" || { echo "upload of $file failed: $hdr" >&2; return 1; }
	awk 'tolower($1) == "location:" { print $2 }' <<<"$hdr"
}

# task_req METHOD PATH [curl options...]: one request to the backend's
# origin; prints the HTTP status (000: no answer). The body is left in
# $T/task.body, the response head in $T/task.hdr.
task_req() {
	local method=$1 path=$2
	shift 2
	curl -sS -o "$T/task.body" -D "$T/task.hdr" -w '%{http_code}' -X "$method" \
		${TASK_AUTH[@]+"${TASK_AUTH[@]}"} "$@" "http://127.0.0.1:$PORT$path" 2>/dev/null || true
}

# task_get ID: prints GET /task/ID's JSON; fails unless it is a 200.
task_get() {
	local code
	code=$(task_req GET "/task/$1")
	[ "$code" = 200 ] || { echo "GET /task/$1: $code $(head -c 300 "$T/task.body")" >&2; return 1; }
	cat "$T/task.body"
}

# wait_task ID [STATUS] [timeout s]: polls GET /tasks/ID/progress (which
# --task-garbage leaves alone) until the task's status is STATUS (default
# completed; "any": until the task exists).
wait_task() {
	local id=$1 want=${2:-completed} deadline=$((SECONDS + ${3:-30})) code status=""
	while [ "$SECONDS" -lt "$deadline" ]; do
		code=$(task_req GET "/tasks/$id/progress")
		if [ "$code" = 200 ]; then
			status=$(jq -r .status "$T/task.body")
			[ "$want" = any ] || [ "$status" = "$want" ] && return 0
		fi
		sleep 0.05
	done
	echo "task $id never got to $want (last: $code $status)"
	return 1
}

# task_polls ID: how many GET /task/ID the backend logged.
task_polls() {
	jq -c --arg p "/task/$1" 'select(.method == "GET" and .path == $p)' "$REQLOG" | grep -c . || true
}

# --- The tuspyserver profile's completion hook (server.js --profile
# tuspyserver): one JSON line per run in $STORE/.hooks.jsonl, {time, id,
# taskId, filename, trigger: "patch"|"post", result: "ok"|"refused",
# reason, file}, written when the run ends.

# hook_runs [--ok|--refused] [FILENAME]: how many hook runs (of that
# result, for that filename metadata) the backend recorded.
hook_runs() {
	local result="" name=""
	case "${1:-}" in --ok) result=ok; shift ;; --refused) result=refused; shift ;; esac
	name=${1:-}
	[ -f "$STORE/.hooks.jsonl" ] || { echo 0; return 0; }
	jq -c --arg r "$result" --arg n "$name" \
		'select(($r == "" or .result == $r) and ($n == "" or .filename == $n))' \
		"$STORE/.hooks.jsonl" | grep -c . || true
}

# hook_runs_by_task: "TASKID RUNS OK" per taskId (sorted), RUNS counting
# every run and OK the passed ones.
hook_runs_by_task() {
	[ -f "$STORE/.hooks.jsonl" ] || return 0
	jq -rs 'group_by(.taskId)[] |
		"\(.[0].taskId) \(length) \(map(select(.result == "ok")) | length)"' \
		"$STORE/.hooks.jsonl" | sort
}
