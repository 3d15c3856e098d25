#!/usr/bin/env bats
# The service's own server (BACKEND.md 1b): the reference backend's
# tuspyserver profile, with and without the service's completion hook.
# Every file gets exactly one task, counted from the backend's record of
# hook runs: whatever the file's size, however slow the final answer,
# after a kill -9 in the middle of it; a recording the service refuses
# fails at once with the server's words, and nothing is sent again.

load helpers/common

setup() {
	common_setup
}

teardown() {
	common_teardown
}

# wav OUT SIZE: a file of exactly SIZE bytes that starts with a real WAV
# header (a recording cut or padded to size; the magic is what is checked).
wav() {
	mkmedia "$1" --seconds 1 --seed "$2"
	truncate -s "$2" "$1"
}

# make_tree DIR: #16's tree of recordings at a 64 KiB chunk: 4 KiB, 1 MB,
# exactly one chunk, one chunk + 1 byte and several chunks, each a real
# WAV header, in two folders. (The 1-byte one, which no header fits in,
# is tried on its own.)
make_tree() {
	local sizes="4096 1000000 65536 65537 300000" s i=0
	mkdir -p "$1/talks/2026"
	for s in $sizes; do
		i=$((i + 1))
		wav "$1/talks/rec$s.wav" "$s"
		wav "$1/talks/2026/day$i.wav" "$s"
		printf 'day %d' "$i" | dd of="$1/talks/2026/day$i.wav" bs=1 seek=100 conv=notrunc 2>/dev/null
	done
}

# tasks_per_file: "FILENAME COUNT" for every task the backend holds.
tasks_per_file() {
	[ "$(task_req GET '/task/all?page=1&page_size=200')" = 200 ]
	jq -r '.tasks | group_by(.file_name)[] | "\(.[0].file_name) \(length)"' "$T/task.body"
}

# one_task_each DIR: every file under DIR has exactly one task, its
# transcripts and the server's bytes.
one_task_each() {
	local f n
	tasks_per_file >"$T/tasks"
	while IFS= read -r f; do
		n=$(basename "$f")
		grep -qx "$n 1" "$T/tasks" || { echo "not one task for $n"; cat "$T/tasks"; return 1; }
		for ext in txt srt vtt json; do
			[ -f "$MNT/${f#"$1"/}.$ext" ] || { echo "no $ext for $f"; return 1; }
		done
		assert_stored_rel "$f" "$1"
	done < <(find "$1" -type f)
	# And no task for anything else.
	[ "$(wc -l <"$T/tasks")" -eq "$(find "$1" -type f | wc -l)" ]
}

# assert_stored_rel FILE TOP: the server holds FILE's bytes, complete.
assert_stored_rel() {
	local n h
	n=$(basename "$1")
	h=$(sha "$1")
	inspect | awk -F'\t' -v n="$n" -v h="$h" '$5 == n && $2 == $3 && $4 == h { ok = 1 } END { exit !ok }' ||
		{ echo "server lacks $1 whole"; inspect; return 1; }
}

tree_gets_one_task_per_file() { # backend options...
	backend_start --task-step-ms 20 "$@"
	tusfs_mount chunk_size=64K
	make_tree "$T/src"
	cp -r "$T/src/talks" "$MNT/"
	"$TUSFS_BIN" wait "$MNT" --transcripts --timeout 90
	one_task_each "$T/src"
	# A 1-byte file holds no recording, but it too gets exactly one task
	# (which fails: not media) and is stored.
	printf x >"$T/one.wav"
	cp "$T/one.wav" "$MNT/talks/one.wav"
	run "$TUSFS_BIN" wait "$MNT" --transcripts --timeout 60
	[ "$status" -eq 1 ]
	[[ "$output" == *"one.wav: failed: unsupported file"* ]]
	[ "$(tasks_per_file | grep -c '^one.wav 1$')" -eq 1 ]
	assert_stored one.wav "$T/one.wav"
}

@test "tuspyserver: a tree of 1 byte to several chunks, exactly one task per file, all transcripts" {
	tree_gets_one_task_per_file --profile tuspyserver
	# Every hook run came from a PATCH, one per file.
	[ "$(hook_runs)" -eq 11 ]
	[ "$(jq -r .trigger "$STORE/.hooks.jsonl" | sort -u)" = patch ]
	! hook_runs_by_task | awk '$2 != 1' | grep -q . || false
}

@test "@tus/server: the same tree, exactly one task per file, all transcripts" {
	tree_gets_one_task_per_file
}

@test "the service's hook: a tree of real recordings, exactly one task per file" {
	backend_start --profile tuspyserver --service-hook --decode-ms 300 --task-step-ms 20
	tusfs_mount chunk_size=64K
	make_tree "$T/src"
	cp -r "$T/src/talks" "$MNT/"
	"$TUSFS_BIN" wait "$MNT" --transcripts --timeout 90
	one_task_each "$T/src"
	[ "$(hook_runs --ok)" -eq 10 ]
	[ "$(hook_runs --refused)" -eq 0 ]
	! hook_runs_by_task | awk '$2 != 1' | grep -q . || false
}

# slow_final [kill]: a 3 MB recording, 1 MiB chunks, stall_timeout=2, and
# a hook that decodes for 5 s: the final answer comes after the stall
# timeout. With kill, the daemon is killed -9 while the hook runs and
# mounted again.
slow_final() {
	backend_start --profile tuspyserver --service-hook --decode-ms 5000 --task-step-ms 20
	tusfs_mount chunk_size=1M,stall_timeout=2
	wav "$T/rec.wav" 3000000
	cp "$T/rec.wav" "$MNT/rec.wav"
	# The hook has taken the file: HEAD answers 404 from here on.
	for _ in $(seq 100); do
		[ -d "$STORE/.taken" ] && [ -n "$(ls "$STORE/.taken")" ] && break
		sleep 0.1
	done
	[ -n "$(ls "$STORE/.taken")" ]
	if [ "${1:-}" = kill ]; then
		tusfs_crash
		tusfs_mount chunk_size=1M,stall_timeout=2
	fi
	"$TUSFS_BIN" wait "$MNT" --transcripts --timeout 60
	[ "$(hook_runs)" -eq 1 ]
	[ "$(hook_runs --ok)" -eq 1 ]
	[ "$(requests POST | wc -l)" -eq 1 ]
	assert_stored rec.wav "$T/rec.wav"
	[ -s "$MNT/rec.wav.txt" ]
}

@test "a final answer slower than stall_timeout: one transcription, the transcript arrives" {
	slow_final
	# The 5 s wait was not taken for a stall.
	! grep -q stalled "$DLOG" || false
}

@test "kill -9 while the service's hook runs: after the remount still one transcription" {
	slow_final kill
	grep -q "the server took the file" "$DLOG"
}

@test "no answer within answer_timeout: the task decides, shown as starting, nothing resent" {
	backend_start --profile tuspyserver --service-hook --decode-ms 6000 --task-step-ms 20
	tusfs_mount chunk_size=1M,answer_timeout=2
	wav "$T/rec.wav" 1500000
	cp "$T/rec.wav" "$MNT/rec.wav"
	for _ in $(seq 100); do
		[ "$(xattr transcription rec.wav)" = starting ] && break
		sleep 0.1
	done
	[ "$(xattr transcription rec.wav)" = starting ]
	jq -e '.transcription.status == "starting"' "$MNT/rec.wav.status"
	"$TUSFS_BIN" wait "$MNT" --transcripts --timeout 60
	grep -q "no answer 2 s after the last byte" "$DLOG"
	[ "$(hook_runs)" -eq 1 ]
	[ "$(requests POST | wc -l)" -eq 1 ]
	assert_stored rec.wav "$T/rec.wav"
}

@test "a .wav that holds no audio: refused once, wait --transcripts names it at once, spool kept" {
	backend_start --profile tuspyserver --service-hook
	tusfs_mount chunk_size=1M
	head -c 2000000 /dev/urandom >"$T/noise"
	cp "$T/noise" "$MNT/noise.wav"
	SECONDS=0
	run "$TUSFS_BIN" wait "$MNT" --transcripts --timeout 100
	[ "$status" -eq 1 ]
	[ "$SECONDS" -lt 100 ]
	[[ "$output" == *"noise.wav: failed:"*"HTTP 500"*INTERNAL_ERROR*"does not match the extension"* ]]
	[ "$(hook_runs --refused)" -ge 1 ]
	[ "$(hook_runs --refused)" -le 2 ]
	[ "$(hook_runs --ok)" -eq 0 ]
	[ "$(xattr state noise.wav)" = uploaded ]
	[ "$(xattr transcription noise.wav)" = failed ]
	jq -e '.transcription.error | test("HTTP 500")' "$MNT/noise.wav.status"
	# Nothing goes again, however long one waits.
	sleep 3
	[ "$(requests POST | wc -l)" -eq 1 ]
	[ "$(hook_runs)" -le 2 ]
	# The spool is kept: the bytes read back, and across a remount.
	cmp "$T/noise" "$MNT/noise.wav"
	tusfs_unmount
	tusfs_mount chunk_size=1M,cache_size=0
	cmp "$T/noise" "$MNT/noise.wav"
	[ "$(xattr transcription noise.wav)" = failed ]
	sleep 1
	[ "$(requests POST | wc -l)" -eq 1 ]
	# Writing it again sends it again, as a new upload.
	mkmedia "$T/real.wav" --seconds 2
	cp "$T/real.wav" "$MNT/noise.wav"
	"$TUSFS_BIN" wait "$MNT" --transcripts --timeout 60
	[ "$(hook_runs --ok)" -eq 1 ]
}

@test "kill -9 after the server completed, before the journal knew: remount sends nothing, one task" {
	# The plain tuspyserver hook; the final PATCH is stored but its answer
	# held, and the daemon dies meanwhile.
	backend_start --profile tuspyserver --stall-ms 4000 --task-step-ms 20
	tusfs_mount chunk_size=1M
	wav "$T/a" 500000
	cp "$T/a" "$MNT/a.wav"
	for _ in $(seq 100); do
		[ "$(hook_runs)" -ge 1 ] && break
		sleep 0.1
	done
	[ "$(hook_runs)" -eq 1 ]
	tusfs_crash
	tusfs_mount chunk_size=1M
	"$TUSFS_BIN" wait "$MNT" --transcripts --timeout 60
	[ "$(hook_runs)" -eq 1 ]
	[ "$(requests PATCH | wc -l)" -eq 1 ]
	assert_stored a.wav "$T/a"
}

@test "500 files with xargs -P 8 cp: exactly one task each" {
	backend_start --profile tuspyserver --task-step-ms 20
	tusfs_mount chunk_size=64K
	mkdir "$T/batch"
	for i in $(seq 500); do
		head -c $((1000 + i * 97)) /dev/urandom >"$T/batch/memo-$i.wav"
	done
	find "$T/batch" -type f -print0 | xargs -0 -P 8 -n 20 cp -t "$MNT/"
	"$TUSFS_BIN" wait "$MNT" --timeout 120
	[ "$(hook_runs_by_task | wc -l)" -eq 500 ]
	! hook_runs_by_task | awk '$2 != 1' | grep -q . || false
	for i in 1 250 500; do
		assert_stored "memo-$i.wav" "$T/batch/memo-$i.wav"
	done
}

@test "the server stopped between requests and back: the upload completes, one task" {
	backend_start --profile tuspyserver --task-step-ms 20
	tusfs_mount chunk_size=1M
	wav "$T/rec.wav" 6000000
	# Written at 1 MB/s: a 1 MiB PATCH takes milliseconds, so right after
	# the server confirmed 2 MiB none is in flight, and none is cut.
	node "$REPO/tests/integration/helpers/slowcopy.mjs" "$T/rec.wav" "$MNT/rec.wav" 1000000 &
	local writer=$!
	wait_offset rec.wav 2097152 30
	backend_stop
	sleep 2
	backend_start --profile tuspyserver --task-step-ms 20 --port "$PORT"
	wait "$writer"
	"$TUSFS_BIN" wait "$MNT" --transcripts --timeout 90
	assert_stored rec.wav "$T/rec.wav"
	[ "$(hook_runs --ok rec.wav)" -eq 1 ]
}
