#!/usr/bin/env bats
# Sidecars: NAME.status through held, uploading and uploaded to a
# completed transcription; the four transcripts against golden files; a
# failed task; a task that never appears; sidecars refusing every change;
# names that collide with sidecars; rename and unlink carrying them along;
# freshness while someone watches; bad task answers; transcripts=off; and a
# remount with the backend stopped.

load helpers/common

GOLDEN=$BATS_TEST_DIRNAME/golden

setup() {
	common_setup
}

teardown() {
	common_teardown
}

# field FILE EXPR: a field of the JSON in FILE, e.g. field x.status
# 'j.transcription.status' (null prints as "null").
field() {
	node -e '
		const j = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
		const v = eval(process.argv[2]);
		console.log(typeof v === "string" ? v : JSON.stringify(v));' "$1" "$2"
}

# wait_transcription NAME STATE [timeout s]
wait_transcription() {
	local deadline=$((SECONDS + ${3:-30})) s=
	while [ "$SECONDS" -lt "$deadline" ]; do
		s=$(xattr transcription "$1") || true
		[ "$s" = "$2" ] && return 0
		sleep 0.2
	done
	echo "transcription of $1 is '$s', not '$2'"
	cat "$MNT/$1.status"
	tail -n 20 "$DLOG"
	return 1
}

media() { # OUT SECONDS SEED
	node "$BACKEND/mkmedia.mjs" "$1" --seconds "$2" --seed "$3"
}

# The metadata's clock readings differ from run to run.
mask_times() {
	sed -E 's/"(start_time|end_time)": "[^"]*"/"\1": "T"/; s/"duration": [0-9.e+-]+/"duration": D/' "$1"
}

@test "a recording goes held, uploading, uploaded, then completed, and its transcripts match the goldens" {
	# The service's server, which starts the transcription when a PATCH
	# completes the upload (BACKEND.md 1b).
	backend_start --profile tuspyserver --task-delay 1500 --task-step-ms 700 --stall-ms 2500 --stall-count 1
	tusfs_mount chunk_size=64K
	media "$T/talk.wav" 10 7

	exec 7>"$MNT/talk.wav"
	head -c 1000 "$T/talk.wav" >&7
	[ "$(field "$MNT/talk.wav.status" j.state)" = held ]
	[ "$(field "$MNT/talk.wav.status" j.transcription.status)" = waiting ]
	tail -c +1001 "$T/talk.wav" >&7
	exec 7>&-

	seen=""
	deadline=$((SECONDS + 40))
	while [ "$SECONDS" -lt "$deadline" ]; do
		cp "$MNT/talk.wav.status" "$T/st"
		s="$(field "$T/st" j.state)/$(field "$T/st" j.transcription.status)"
		[ "${seen##* }" = "$s" ] || seen="$seen $s"
		if [ "${s%/*}" = uploading ] && [ "$(field "$T/st" j.rate_bytes_per_s)" != null ]; then
			rated=yes
			[ "$(field "$T/st" j.eta_s)" != null ]
		fi
		[ "$s" = uploaded/completed ] && break
		sleep 0.1
	done
	echo "seen:$seen"
	[[ "$seen" =~ uploading/waiting.*uploaded/queued.*uploaded/processing.*uploaded/completed$ ]]
	# While uploading, the status had a rate and an ETA; now it is whole.
	[ "${rated:-}" = yes ]
	[ "$(field "$T/st" j.bytes_confirmed)" = "$(stat -c %s "$T/talk.wav")" ]
	[ "$(field "$T/st" j.percent)" = 100 ]
	assert_stored talk.wav "$T/talk.wav"

	ls "$MNT" >"$T/ls"
	printf '%s\n' talk.wav talk.wav.json talk.wav.srt talk.wav.status \
		talk.wav.txt talk.wav.vtt | diff - "$T/ls"
	for f in txt srt vtt; do
		diff "$GOLDEN/talk.wav.$f" "$MNT/talk.wav.$f"
	done
	diff <(mask_times "$GOLDEN/talk.wav.json") <(mask_times "$MNT/talk.wav.json")
	# stat's size is what read returns, for every sidecar.
	for f in txt srt vtt json status; do
		[ "$(stat -c %s "$MNT/talk.wav.$f")" -eq "$(wc -c <"$MNT/talk.wav.$f")" ]
		[ "$(stat -c %a "$MNT/talk.wav.$f")" = 444 ]
	done
	"$TUSFS_BIN" wait "$MNT" --transcripts --timeout 5
	[ "$(hook_runs --ok talk.wav)" -eq 1 ]
}

@test "a failed task shows failed with the server's message and no transcripts" {
	backend_start --task-delay 0 --task-fail "the model could not decode the audio"
	tusfs_mount
	media "$T/a.wav" 3 1
	cp "$T/a.wav" "$MNT/a.wav"
	wait_transcription a.wav failed
	[ "$(field "$MNT/a.wav.status" j.transcription.error)" = "the model could not decode the audio" ]
	[ "$(field "$MNT/a.wav.status" j.state)" = uploaded ]
	[ ! -e "$MNT/a.wav.txt" ]
	[ "$(ls "$MNT")" = "$(printf 'a.wav\na.wav.status')" ]
	run "$TUSFS_BIN" wait "$MNT" --transcripts --timeout 5
	[ "$status" -eq 1 ]
	[[ "$output" == *"a.wav: failed: the model could not decode the audio"* ]]
	# Uploads alone are all done.
	"$TUSFS_BIN" wait "$MNT" --timeout 5
}

@test "a task that never appears is reported missing after task_timeout" {
	backend_start
	tusfs_mount "task_url=http://127.0.0.1:$PORT/nowhere/{id},task_timeout=2"
	media "$T/a.wav" 1 2
	cp "$T/a.wav" "$MNT/a.wav"
	wait_transcription a.wav missing 20
	[[ "$(field "$MNT/a.wav.status" j.transcription.error)" == *"no task appeared within 2 s"* ]]
	grep -q '"path":"/nowhere/' "$REQLOG"
	! grep -q '"path":"/task/' "$REQLOG" || false
}

@test "sidecars refuse writes, truncation, rename, unlink and chmod, and change nothing" {
	backend_start --task-delay 0 --task-step-ms 50
	tusfs_mount
	media "$T/a.wav" 3 3
	cp "$T/a.wav" "$MNT/a.wav"
	wait_transcription a.wav completed
	for f in status txt srt vtt json; do
		p="$MNT/a.wav.$f"
		[ -e "$p" ]
		before=$(sha "$p")
		run sh -c "echo x >'$p'"
		[ "$status" -ne 0 ]
		run sh -c "echo x >>'$p'"
		[ "$status" -ne 0 ]
		run truncate -s 0 "$p"
		[ "$status" -ne 0 ]
		run mv "$p" "$MNT/moved"
		[ "$status" -ne 0 ]
		run rm -f "$p"
		[ "$status" -ne 0 ]
		run chmod 666 "$p"
		[ "$status" -ne 0 ]
		run chown 1:1 "$p"
		[ "$status" -ne 0 ]
		run touch "$p"
		[ "$status" -ne 0 ]
		[ -e "$p" ]
		[ ! -e "$MNT/moved" ]
		[ "$(stat -c %a "$p")" = 444 ]
		if [ "$f" != status ]; then
			[ "$(sha "$p")" = "$before" ]
		fi
	done
	# Nothing else happened to the file or on the server.
	assert_stored a.wav "$T/a.wav"
	[ "$(requests POST | wc -l)" -eq 1 ]
}

@test "names that collide with sidecars cannot be created" {
	backend_start --task-delay 0 --task-step-ms 50
	tusfs_mount
	echo data >"$MNT/a.wav"
	# A sidecar's name, shown or not yet.
	run sh -c "echo x >'$MNT/a.wav.txt'"
	[ "$status" -ne 0 ]
	[[ "$output" == *"File exists"* ]]
	run mkdir "$MNT/a.wav.srt"
	[ "$status" -ne 0 ]
	run mv "$MNT/a.wav" "$MNT/b.wav"
	[ "$status" -eq 0 ]
	echo y >"$MNT/c.wav"
	run mv "$MNT/c.wav" "$MNT/b.wav.status"
	[ "$status" -ne 0 ]
	# A file whose sidecars' names are taken by real entries.
	echo notes >"$MNT/lecture.txt"
	run sh -c "echo x >'$MNT/lecture'"
	[ "$status" -ne 0 ]
	[[ "$output" == *"File exists"* ]]
	grep -q "'lecture': refused" "$DLOG"
	ls "$MNT" >"$T/ls"
	printf '%s\n' b.wav b.wav.status c.wav c.wav.status lecture.txt \
		lecture.txt.status | diff - "$T/ls"
}

@test "sidecars follow their file on rename and vanish with it on unlink" {
	backend_start --task-delay 0 --task-step-ms 50
	tusfs_mount
	media "$T/a.wav" 3 4
	cp "$T/a.wav" "$MNT/a.wav"
	wait_transcription a.wav completed
	txt=$(cat "$MNT/a.wav.txt")
	[ -n "$txt" ]
	mkdir "$MNT/done"
	mv "$MNT/a.wav" "$MNT/done/b.wav"
	[ ! -e "$MNT/a.wav.txt" ]
	[ ! -e "$MNT/a.wav.status" ]
	[ "$(cat "$MNT/done/b.wav.txt")" = "$txt" ]
	[ -e "$MNT/done/b.wav.json" ]
	rm "$MNT/done/b.wav"
	[ -z "$(ls "$MNT/done")" ]
	# The stored transcripts go with it, once the last reference to the
	# file is dropped (the journal may hold one a moment longer).
	for _ in $(seq 50); do
		[ -z "$(ls "$STATE/transcripts")" ] && break
		sleep 0.1
	done
	[ -z "$(ls "$STATE/transcripts")" ]
}

@test "a new cat sees a change on the server within 2 s" {
	backend_start --task-delay 0 --task-step-ms 3000
	tusfs_mount
	media "$T/a.wav" 2 5
	cp "$T/a.wav" "$MNT/a.wav"
	wait_transcription a.wav processing
	id=$(xattr task_id a.wav)
	# Watch both: the server's progress route and the sidecar.
	: >"$T/server" >"$T/side"
	deadline=$((SECONDS + 20))
	while [ "$SECONDS" -lt "$deadline" ]; do
		now=$(date +%s.%N)
		s=$(curl -s "http://127.0.0.1:$PORT/tasks/$id/progress" |
			node -e 'console.log(JSON.parse(require("fs").readFileSync(0)).progress_stage)')
		echo "$now $s" >>"$T/server"
		cp "$MNT/a.wav.status" "$T/st"
		echo "$(date +%s.%N) $(field "$T/st" j.transcription.stage)" >>"$T/side"
		[ "$s" = complete ] && [ "$(field "$T/st" j.transcription.stage)" = complete ] && break
		sleep 0.2
	done
	# For each stage: first seen on the server vs first seen in the file.
	for stage in aligning diarizing complete; do
		a=$(awk -v s="$stage" '$2 == s { print $1; exit }' "$T/server")
		b=$(awk -v s="$stage" '$2 == s { print $1; exit }' "$T/side")
		echo "$stage: server $a, sidecar $b"
		[ -n "$a" ]
		[ -n "$b" ]
		awk -v a="$a" -v b="$b" 'BEGIN { exit !(b - a <= 2.0) }'
	done
}

@test "bad task answers show in the status, polling goes on, and the transcript still arrives" {
	backend_start
	tusfs_mount
	i=0
	for kind in html truncated types huge segments; do
		i=$((i + 1))
		backend_stop
		backend_start --port "$PORT" --task-delay 0 --task-step-ms 50 \
			--task-garbage "$kind" --task-garbage-count 2
		media "$T/$kind.wav" 1 "$i"
		cp "$T/$kind.wav" "$MNT/$kind.wav"
		problem=""
		deadline=$((SECONDS + 30))
		while [ "$SECONDS" -lt "$deadline" ]; do
			cp "$MNT/$kind.wav.status" "$T/st"
			p=$(field "$T/st" j.transcription.poll_error)
			[ "$p" != null ] && problem=$p
			[ "$(field "$T/st" j.transcription.status)" = completed ] && break
			sleep 0.1
		done
		echo "$kind: $problem"
		[ "$(field "$T/st" j.transcription.status)" = completed ]
		[ "$(field "$T/st" j.transcription.poll_error)" = null ]
		case $kind in
		html | truncated) [[ "$problem" == *"not JSON"* ]] ;;
		types) [[ "$problem" == *"'status'"* ]] ;;
		huge) [[ "$problem" == *"larger than max_task_json=32M"* ]] ;;
		segments) [[ "$problem" == *"segment"* ]] ;;
		esac
		[ -s "$MNT/$kind.wav.txt" ]
	done
}

@test "a task answer over max_task_json is a poll error naming it; a remount with the default reads it" {
	backend_start --task-delay 0 --task-step-ms 50
	tusfs_mount max_task_json=1K
	media "$T/a.wav" 40 12
	cp "$T/a.wav" "$MNT/a.wav"
	local id p= deadline=$((SECONDS + 30))
	id=$(xattr task_id a.wav)
	while [ "$SECONDS" -lt "$deadline" ]; do
		p=$(field "$MNT/a.wav.status" j.transcription.poll_error)
		[[ "$p" == *"larger than max_task_json=1024; ignored"* ]] && break
		sleep 0.2
	done
	[[ "$p" == *"larger than max_task_json=1024; ignored"* ]] || { echo "$p"; false; }
	# The answer is complete and well over the limit, not garbage.
	task_get "$id" >"$T/answer"
	[ "$(jq -r .status "$T/answer")" = completed ]
	[ "$(stat -c %s "$T/answer")" -gt 1024 ]
	[ "$(xattr transcription a.wav)" != completed ]
	[ ! -e "$MNT/a.wav.txt" ]
	tusfs_unmount
	tusfs_mount
	wait_transcription a.wav completed
	[ -s "$MNT/a.wav.txt" ]
}

@test "transcripts=off keeps .status, shows no transcripts and never polls" {
	backend_start --task-delay 0 --task-step-ms 50
	tusfs_mount transcripts=off
	media "$T/a.wav" 1 6
	cp "$T/a.wav" "$MNT/a.wav"
	wait_complete 1
	sleep 1.5
	[ "$(field "$MNT/a.wav.status" j.state)" = uploaded ]
	[ "$(field "$MNT/a.wav.status" j.transcription)" = null ]
	[ "$(ls "$MNT")" = "$(printf 'a.wav\na.wav.status')" ]
	! grep -q '"path":"/task' "$REQLOG" || false
	# Without transcripts, a .txt beside it is an ordinary file.
	echo mine >"$MNT/a.wav.txt"
	[ "$(cat "$MNT/a.wav.txt")" = mine ]
}

@test "sidecars survive a remount with the backend stopped" {
	backend_start --task-delay 0 --task-step-ms 50
	tusfs_mount
	media "$T/a.wav" 3 8
	cp "$T/a.wav" "$MNT/a.wav"
	wait_transcription a.wav completed
	for f in txt srt vtt json; do
		cp "$MNT/a.wav.$f" "$T/before.$f"
	done
	tusfs_unmount
	backend_stop
	tusfs_mount
	grep -q "offered last time" "$DLOG"
	for f in txt srt vtt json; do
		cmp "$T/before.$f" "$MNT/a.wav.$f"
	done
	[ "$(field "$MNT/a.wav.status" j.transcription.status)" = completed ]
	[ "$(field "$MNT/a.wav.status" j.state)" = uploaded ]
}

@test "unlink of a transcribed file is local; with delete_remote its task is deleted too" {
	backend_start --task-delay 100
	tusfs_mount
	media "$T/a.wav" 1 11
	cp "$T/a.wav" "$MNT/a.wav"
	wait_transcription a.wav completed
	local kept
	kept=$(xattr task_id a.wav)
	rm "$MNT/a.wav"
	sleep 1
	[ -z "$(jq -c 'select(.method == "DELETE")' "$REQLOG")" ]
	task_get "$kept" >/dev/null  # the task is the user's
	tusfs_unmount
	tusfs_mount delete_remote
	media "$T/b.wav" 1 12
	cp "$T/b.wav" "$MNT/b.wav"
	cp "$T/a.wav" "$MNT/c.wav"
	wait_transcription b.wav completed
	wait_transcription c.wav completed
	local gone replaced
	gone=$(xattr task_id b.wav)
	replaced=$(xattr task_id c.wav)
	rm "$MNT/b.wav"
	cp "$T/b.wav" "$MNT/d.wav.part"
	mv "$MNT/d.wav.part" "$MNT/c.wav"
	for _ in $(seq 50); do
		[ "$(task_req GET "/task/$gone")" = 404 ] && [ "$(task_req GET "/task/$replaced")" = 404 ] && break
		sleep 0.1
	done
	[ "$(task_req GET "/task/$gone")" = 404 ]
	[ "$(task_req GET "/task/$replaced")" = 404 ]
	jq -c 'select(.method == "DELETE")' "$REQLOG" | grep -q "\"path\":\"/task/$gone/delete\",\"status\":200"
	task_get "$kept" >/dev/null
	grep -q "task $gone: deleted" "$DLOG"
	run "$TUSFS_BIN" -f -o delete_remote,transcripts=off "$ENDPOINT" "$MNT"
	[ "$status" -eq 1 ]
	[[ "$output" == *"delete_remote needs transcripts=on"* ]]
}
