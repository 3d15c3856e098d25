#!/usr/bin/env bats
# The reference backend's fault injection switches (tests/backend/server.js),
# driven with curl alone, no tusfs: each switch does what it says, leaves
# the store as it says, logs "fault" on the requests it hits, and does the
# same again for the same --seed. Also: a backend killed mid-upload and
# restarted on the same port and directory serves the upload on, and the
# request log keeps each Upload-Metadata header byte for byte.

load helpers/common

setup() {
	common_setup
}

teardown() {
	common_teardown
}

backend_stop() {
	kill "${1:--TERM}" "$BACKEND_PID" 2>/dev/null || true
	wait "$BACKEND_PID" 2>/dev/null || true
	BACKEND_PID=
}

# A fresh store and log for the next run in the same test.
backend_reset() {
	backend_stop
	rm -rf "$STORE" "$REQLOG"
	mkdir -p "$STORE"
}

# create LENGTH: a new upload; prints its URL.
create() {
	curl -sS -o /dev/null -D - -X POST -H 'Tus-Resumable: 1.0.0' \
		-H "Upload-Length: $1" "$ENDPOINT" |
		tr -d '\r' | awk 'tolower($1) == "location:" { print $2 }'
}

# patch URL OFFSET FILE [curl options...]: prints the status (000: no answer).
patch() {
	local url=$1 offset=$2 file=$3
	shift 3
	curl -sS -o /dev/null -w '%{http_code}' -X PATCH -H 'Tus-Resumable: 1.0.0' \
		-H 'Content-Type: application/offset+octet-stream' \
		-H "Upload-Offset: $offset" --data-binary "@$file" "$@" "$url" 2>/dev/null || true
}

# head URL: prints "STATUS OFFSET" (OFFSET - when absent).
head_offset() {
	curl -sS -I -H 'Tus-Resumable: 1.0.0' "$1" | tr -d '\r' | awk '
		NR == 1 { s = $2 }
		tolower($1) == "upload-offset:" { o = $2 }
		END { print s, (o == "" ? "-" : o) }'
}

# piece SRC FROM LEN: bytes FROM..FROM+LEN-1 of SRC, as a file; prints it.
piece() {
	local out=$T/piece.$2.$3
	tail -c +"$(($2 + 1))" "$1" | head -c "$3" >"$out"
	printf '%s\n' "$out"
}

# Faults logged for PATCH requests, in order, "-" for none.
patch_faults() {
	jq -r 'select(.method == "PATCH") | .fault // "-"' "$REQLOG" | paste -sd' '
}

# Count log lines matching a jq condition.
logged() {
	jq -c "select($1)" "$REQLOG" | grep -c . || true
}

now_ms() {
	echo $(($(date +%s%N) / 1000000))
}

# 20 PATCHes of 10 bytes, each at the offset the server holds; prints the
# statuses. Nothing but the failed ones may be missing from the store.
twenty_patches() {
	local url n ok=0 codes=()
	head -c 200 /dev/urandom >"$T/src20"
	url=$(create 200)
	for n in $(seq 0 19); do
		codes+=("$(patch "$url" $((ok * 10)) "$(piece "$T/src20" $((ok * 10)) 10)")")
		[ "${codes[-1]}" = 204 ] && ok=$((ok + 1))
	done
	[ "$(head_offset "$url")" = "200 $((ok * 10))" ] || return 1
	cmp -n $((ok * 10)) "$T/src20" "$STORE/${url##*/}" || return 1
	echo "${codes[*]}"
}

@test "--fail-share fails a seeded, repeatable share of PATCHes and stores nothing of them" {
	backend_start --fail-share 0.3 --seed 7
	run1=$(twenty_patches)
	fails=$(tr ' ' '\n' <<<"$run1" | grep -c 500 || true)
	[ "$fails" -ge 2 ]
	[ "$fails" -le 12 ]
	[ "$(tr ' ' '\n' <<<"$run1" | grep -vc -e 500 -e 204)" -eq 0 ]
	[ "$(logged '.fault == "fail" and .status == 500 and .body_bytes == 10')" -eq "$fails" ]

	# Same seed, other status, Retry-After: the same PATCHes fail.
	backend_reset
	backend_start --fail-share 0.3 --seed 7 --fail-status 503 --retry-after 3
	run2=$(twenty_patches)
	[ "${run2//503/500}" = "$run1" ]
	url=$(create 5)
	printf 'abcde' >"$T/five"
	# PATCH number 21 fails iff the 21st draw says so; find a failing one.
	for _ in $(seq 20); do
		curl -sS -o /dev/null -D "$T/hdr" -X PATCH -H 'Tus-Resumable: 1.0.0' \
			-H 'Content-Type: application/offset+octet-stream' -H 'Upload-Offset: 0' \
			--data-binary "@$T/five" "$url"
		head -1 "$T/hdr" | grep -q ' 503' && break
	done
	grep -qi '^Retry-After: 3' "$T/hdr"
	grep -qi '^Tus-Resumable: 1.0.0' "$T/hdr"

	# Another seed, another sequence.
	backend_reset
	backend_start --fail-share 0.3 --seed 8
	run3=$(twenty_patches)
	[ "$run3" != "$run1" ]

	# 1 fails them all.
	backend_reset
	backend_start --fail-share 1 --fail-status 429
	[ "$(twenty_patches)" = "$(printf '429 %.0s' $(seq 19))429" ]
}

@test "--cut-after stores exactly N bytes, then drops the connection unanswered" {
	backend_start --cut-after 1000 --cut-count 2
	head -c 5000 /dev/urandom >"$T/src"
	url=$(create 5000)
	store=$STORE/${url##*/}
	# At most N bytes: not cut.
	[ "$(patch "$url" 0 "$(piece "$T/src" 0 500)")" = 204 ]
	# Content-Length 3000: 1000 bytes kept, no answer.
	[ "$(patch "$url" 500 "$(piece "$T/src" 500 3000)")" = 000 ]
	[ "$(head_offset "$url")" = "200 1500" ]
	cmp "$store" <(head -c 1500 "$T/src")
	# Chunked, 2000 bytes: the second cut, again 1000 bytes kept.
	[ "$(patch "$url" 1500 "$(piece "$T/src" 1500 2000)" -H 'Transfer-Encoding: chunked')" = 000 ]
	[ "$(head_offset "$url")" = "200 2500" ]
	# --cut-count 2 is used up: the rest goes through.
	[ "$(patch "$url" 2500 "$(piece "$T/src" 2500 2500)")" = 204 ]
	[ "$(head_offset "$url")" = "200 5000" ]
	cmp "$store" "$T/src"
	[ "$(patch_faults)" = "- cut cut -" ]
	[ "$(logged '.fault == "cut" and .status == null')" -eq 2 ]
	# A chunked body of at most N bytes is not cut either.
	backend_reset
	backend_start --cut-after 1000
	url=$(create 5000)
	[ "$(patch "$url" 0 "$(piece "$T/src" 0 1000)" -H 'Transfer-Encoding: chunked')" = 204 ]
	[ "$(patch "$url" 1000 "$(piece "$T/src" 1000 1001)")" = 000 ]
	[ "$(head_offset "$url")" = "200 2000" ]
	cmp "$STORE/${url##*/}" <(head -c 2000 "$T/src")
	[ "$(patch_faults)" = "- cut" ]
}

@test "--conflict-once answers 409 to each upload's first PATCH past offset 0" {
	backend_start --conflict-once
	printf '0123456789' >"$T/ten"
	a=$(create 30)
	b=$(create 30)
	for u in "$a" "$b"; do
		[ "$(patch "$u" 0 "$T/ten")" = 204 ]
		[ "$(patch "$u" 10 "$T/ten")" = 409 ]
		[ "$(head_offset "$u")" = "200 10" ]
		[ "$(patch "$u" 10 "$T/ten")" = 204 ]
		[ "$(patch "$u" 20 "$T/ten")" = 204 ]
		[ "$(head_offset "$u")" = "200 30" ]
	done
	[ "$(patch_faults)" = "- conflict - - - conflict - -" ]
	[ "$(logged '.fault == "conflict" and .status == 409 and .upload_offset == 10')" -eq 2 ]
}

@test "--forget-once deletes the first upload PATCHed past offset 0 and answers 404, once" {
	backend_start --forget-once
	printf '0123456789' >"$T/ten"
	a=$(create 20)
	b=$(create 20)
	[ "$(patch "$a" 0 "$T/ten")" = 204 ]
	[ "$(patch "$b" 0 "$T/ten")" = 204 ]
	[ "$(patch "$a" 10 "$T/ten")" = 404 ]
	[ ! -e "$STORE/${a##*/}" ]
	[ ! -e "$STORE/${a##*/}.json" ]
	[ "$(head_offset "$a")" = "404 -" ]
	[ "$(patch "$a" 10 "$T/ten")" = 404 ]
	[ "$(patch "$b" 10 "$T/ten")" = 204 ]
	[ "$(head_offset "$b")" = "200 20" ]
	[ "$(patch_faults)" = "- - forget - -" ]
}

@test "--expire-once deletes the first upload PATCHed past offset 0; 410 for it from then on" {
	backend_start --expire-once
	printf '0123456789' >"$T/ten"
	a=$(create 20)
	b=$(create 20)
	[ "$(patch "$a" 0 "$T/ten")" = 204 ]
	[ "$(patch "$a" 10 "$T/ten")" = 410 ]
	[ ! -e "$STORE/${a##*/}" ]
	[ ! -e "$STORE/${a##*/}.json" ]
	[ "$(head_offset "$a")" = "410 -" ]
	[ "$(patch "$a" 10 "$T/ten")" = 410 ]
	[ "$(curl -sS -o /dev/null -w '%{http_code}' -X DELETE -H 'Tus-Resumable: 1.0.0' "$a")" = 410 ]
	# Once per process: the next upload is left alone.
	[ "$(patch "$b" 0 "$T/ten")" = 204 ]
	[ "$(patch "$b" 10 "$T/ten")" = 204 ]
	[ "$(head_offset "$b")" = "200 20" ]
	[ "$(logged '.fault == "expire" and .status == 410')" -eq 1 ]
	[ "$(logged '.fault == "gone" and .status == 410')" -eq 3 ]
}

@test "--stall-ms holds the first K answers but stores the bytes at once" {
	backend_start --stall-ms 1000 --stall-count 2
	printf '0123456789' >"$T/ten"
	url=$(create 30)
	# A client that gives up before the answer: the bytes are stored anyway.
	[ "$(patch "$url" 0 "$T/ten" --max-time 0.4)" = 000 ]
	[ "$(head_offset "$url")" = "200 10" ]
	t0=$(now_ms)
	[ "$(patch "$url" 10 "$T/ten")" = 204 ]
	t1=$(now_ms)
	[ "$(patch "$url" 20 "$T/ten")" = 204 ]
	t2=$(now_ms)
	[ $((t1 - t0)) -ge 950 ]
	[ $((t2 - t1)) -lt 500 ]
	[ "$(head_offset "$url")" = "200 30" ]
	[ "$(patch_faults)" = "stall stall -" ]
	# The abandoned one is logged once, unanswered.
	sleep 0.7
	[ "$(logged '.fault == "stall" and .status == null')" -eq 1 ]
	[ "$(logged '.fault == "stall" and .status == 204')" -eq 1 ]
}

# A client that resumes properly (HEAD, then PATCH from the offset) gets its
# file through every fault at once; the faults come in the same order twice.
resume_upload() {
	local url off=0 code n
	url=$(create 2000)
	for n in $(seq 60); do
		off=$(head_offset "$url" | cut -d' ' -f2)
		[ "$off" = 2000 ] && break
		code=$(patch "$url" "$off" "$(piece "$T/src" "$off" $((2000 - off < 300 ? 2000 - off : 300)))")
	done
	[ "$(head_offset "$url")" = "200 2000" ] || return 1
	cmp "$STORE/${url##*/}" "$T/src" || return 1
	patch_faults
}

@test "switches combine, and a resuming client gets through them the same way twice" {
	head -c 2000 /dev/urandom >"$T/src"
	opts=(--fail-share 0.25 --seed 3 --cut-after 100 --cut-count 2 --conflict-once --stall-ms 100)
	backend_start "${opts[@]}"
	run1=$(resume_upload)
	[[ " $run1 " == *" fail "* ]]
	[[ " $run1 " == *" cut "* ]]
	[[ " $run1 " == *" conflict "* ]]
	[[ " $run1 " == *" stall "* ]]
	backend_reset
	backend_start "${opts[@]}"
	run2=$(resume_upload)
	[ "$run2" = "$run1" ]
}

@test "a backend killed mid-upload serves the upload again on the same port" {
	backend_start
	head -c 300000 /dev/urandom >"$T/src"
	url=$(create 300000)
	[ "$(patch "$url" 0 "$(piece "$T/src" 0 1000)")" = 204 ]
	# A slow PATCH in flight when the backend dies.
	patch "$url" 1000 "$(piece "$T/src" 1000 299000)" --limit-rate 100K >"$T/slow" &
	slow=$!
	sleep 0.5
	backend_stop -KILL
	wait "$slow"
	[ "$(cat "$T/slow")" = 000 ]
	old=$PORT
	backend_start --port "$old"
	[ "$PORT" = "$old" ]
	read -r status off <<<"$(head_offset "$url")"
	[ "$status" = 200 ]
	[ "$off" -gt 1000 ]
	[ "$off" -lt 300000 ]
	cmp "$STORE/${url##*/}" <(head -c "$off" "$T/src")
	[ "$(patch "$url" "$off" "$(piece "$T/src" "$off" $((300000 - off)))")" = 204 ]
	[ "$(head_offset "$url")" = "200 300000" ]
	cmp "$STORE/${url##*/}" "$T/src"
	# And once more, with a clean stop.
	backend_stop
	backend_start --port "$old"
	[ "$(head_offset "$url")" = "200 300000" ]
}

@test "--store discard counts the bytes like a store, keeps none, and creates no task" {
	backend_start --store discard --task-delay 0
	head -c 3000000 /dev/urandom >"$T/src"
	local url
	url=$(create 3000000)
	[ "$(patch "$url" 0 "$(piece "$T/src" 0 1000000)")" = 204 ]
	[ "$(head_offset "$url")" = "200 1000000" ]
	# A wrong offset is refused as by the file store.
	[ "$(patch "$url" 0 "$(piece "$T/src" 0 1000)")" = 409 ]
	[ "$(patch "$url" 1000000 "$(piece "$T/src" 1000000 2000000)")" = 204 ]
	[ "$(head_offset "$url")" = "200 3000000" ]
	# creation-with-upload and termination too.
	url=$(TASK_AUTH=() tus_upload "$T/src" taskId "$(cat /proc/sys/kernel/random/uuid)")
	[ "$(head_offset "$url")" = "200 3000000" ]
	[ "$(curl -sS -o /dev/null -w '%{http_code}' -X DELETE -H 'Tus-Resumable: 1.0.0' "$url")" = 204 ]
	[ "$(head_offset "$url")" = "404 -" ]
	# Nothing stored: no upload, no info file, no task.
	sleep 0.5
	[ -z "$(find "$STORE" -type f)" ]
	run node "$BACKEND/server.js" --dir "$STORE" --store s3
	[ "$status" -eq 2 ]
	[[ "${lines[0]}" == "server.js: --store takes file or discard" ]]
}

@test "the request log keeps each Upload-Metadata as sent, bytes that are not UTF-8 too" {
	backend_start
	local name=$'a\xff\xfe\nb,"c' url
	printf x >"$T/src"
	url=$(tus_upload "$T/src" filename "$name" filetype audio/wav)
	[ "$(jq -r 'select(.method == "POST") | .upload_metadata' "$REQLOG")" = \
		"filename $(b64 "$name"),filetype $(b64 audio/wav)" ]
	[ "$(jq -r 'select(.method == "POST") | .upload_metadata' "$REQLOG" |
		tr ',' '\n' | awk '$1 == "filename" { print $2 }' | base64 -d | od -An -tx1)" = \
		"$(printf '%s' "$name" | od -An -tx1)" ]
	# Requests without the header have no such field.
	[ "$(head_offset "$url")" = "200 1" ]
	[ "$(logged '.method == "HEAD" and has("upload_metadata")')" -eq 0 ]
}

@test "bad fault switches are refused with a message" {
	srv=$BACKEND/server.js
	for args in "--fail-share 1.5" "--fail-share x" "--fail-share 0.1 --fail-status 404" \
		"--retry-after 3" "--fail-status 500" "--cut-count 2" "--cut-after 10 --cut-count 0" \
		"--stall-count 2" "--stall-ms -1" "--seed x" "--seed 4294967296"; do
		# shellcheck disable=SC2086
		run node "$srv" --dir "$STORE" $args
		[ "$status" -eq 2 ] || { echo "accepted: $args"; return 1; }
		[[ "${lines[0]}" == "server.js: "* ]]
	done
	run node "$srv" --help
	[[ "$output" == *"--fail-share P"* ]]
	[[ "$output" == *"--stall-ms MS"* ]]
}

# --- The transcription task API (BACKEND.md section 2) ----------------------

uuid() {
	cat /proc/sys/kernel/random/uuid
}

# body_is JQ: the last task_req body satisfies JQ.
body_is() {
	jq -e "$1" "$T/task.body" >/dev/null 2>&1 ||
		{ echo "body is not ($1):"; head -c 3000 "$T/task.body"; echo; return 1; }
}

# A completed answer in every detail BACKEND.md gives; $1 file name, $2
# language, $3 audio seconds.
TASK_SHAPE='
	def iso: type == "string" and test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$");
	(keys == ["error", "metadata", "result", "status"]) and .status == "completed" and .error == null
	and (.metadata | keys == ["audio_duration", "callback_url", "duration", "end_time", "file_name",
		"language", "start_time", "task_params", "task_type", "url"])
	and .metadata.task_type == "full_process" and .metadata.task_params == null
	and .metadata.url == null and .metadata.callback_url == null
	and .metadata.file_name == $name and .metadata.language == $lang
	and .metadata.audio_duration == $secs and (.metadata.duration | type == "number")
	and (.metadata.start_time | iso) and (.metadata.end_time | iso)
	and .metadata.start_time <= .metadata.end_time
	and .result.language == $lang and (.result | keys == ["language", "segments"])
	and (.result.segments | length) >= 1
	and all(.result.segments[]; . as $s |
		(.start | type == "number") and (.end | type == "number") and .start < .end and .end <= ([$secs, 1] | max)
		and (.text | type == "string" and startswith(" ") and length > 1)
		and ((has("speaker") | not) or .speaker == "SPEAKER_00" or .speaker == "SPEAKER_01")
		and (.words | length >= 1)
		and all(.words[]; (.word | type == "string") and .start >= $s.start and .end <= $s.end
			and .start < .end and .score >= 0 and .score <= 1 and .speaker == $s.speaker))
	and ([.result.segments[] | .start] | . == sort)'

# assert_task_shape NAME LANG SECONDS: the last task_req body is a
# completed answer for that file.
assert_task_shape() {
	jq -e --arg name "$1" --arg lang "$2" --argjson secs "$3" "$TASK_SHAPE" "$T/task.body" >/dev/null ||
		{ echo "not a completed answer for $1:"; head -c 3000 "$T/task.body"; echo; return 1; }
}

@test "task: 404 until the last byte and --task-delay, then processing through the stages, then the transcript" {
	# Stages long enough to be seen by a loop of curl and jq on a loaded
	# machine (the suite runs two tests at once).
	backend_start --task-delay 800 --task-step-ms 600
	mkmedia "$T/rec.wav" --seconds 10 --seed 3
	size=$(stat -c %s "$T/rec.wav")
	id=$(uuid)
	name='räksmörgås 東京.wav'
	url=$(curl -sS -o /dev/null -D - -X POST -H 'Tus-Resumable: 1.0.0' -H "Upload-Length: $size" \
		-H "Upload-Metadata: filename $(b64 "$name"),filetype $(b64 audio/wav),taskId $(b64 "$id")" \
		"$ENDPOINT" | tr -d '\r' | awk 'tolower($1) == "location:" { print $2 }')
	[ "$(patch "$url" 0 "$(piece "$T/rec.wav" 0 1000)")" = 204 ]
	[ "$(task_req GET "/task/$id")" = 404 ]
	body_is '. == {"detail": "Task not found"}'
	grep -qi '^Content-Type: application/json' "$T/task.hdr"
	[ "$(task_req GET "/tasks/$id/progress")" = 404 ]
	body_is '. == {"detail": "Task not found"}'
	# Longer than the delay: still nothing, the upload is not finished.
	sleep 1
	[ "$(task_req GET "/task/$id")" = 404 ]
	[ "$(patch "$url" 1000 "$(piece "$T/rec.wav" 1000 $((size - 1000)))")" = 204 ]
	t0=$(now_ms)
	[ "$(task_req GET "/task/$id")" = 404 ]
	wait_task "$id" any 5
	[ $(($(now_ms) - t0)) -ge 700 ]

	# Every stage in order, each seen on its way; the answer agrees.
	seen=() last="" deadline=$((SECONDS + 10)) checked=""
	while [ "$SECONDS" -lt "$deadline" ]; do
		[ "$(task_req GET "/tasks/$id/progress")" = 200 ]
		body_is 'keys == ["error", "identifier", "progress_percentage", "progress_stage", "status"]'
		body_is ".identifier == \"$id\" and .error == null"
		now=$(jq -r '"\(.status):\(.progress_stage):\(.progress_percentage)"' "$T/task.body")
		[ "$last" = "$now" ] || seen+=("$now")
		last=$now
		[ "${now%%:*}" = completed ] && break
		if [ -z "$checked" ]; then
			[ "$(task_req GET "/task/$id")" = 200 ]
			body_is '.status == "processing" and .result == null and .error == null
				and .metadata.end_time == null and .metadata.duration == null
				and .metadata.audio_duration == 10'
			checked=1
		fi
		sleep 0.03
	done
	[ "${seen[*]}" = "processing:queued:0 processing:transcribing:25 processing:aligning:50 processing:diarizing:75 completed:complete:100" ]

	[ "$(task_req GET "/task/$id")" = 200 ]
	grep -qi '^Content-Type: application/json' "$T/task.hdr"
	assert_task_shape "$name" en 10
	# 10 s: 3 segments (one per 4 s), some with a speaker, some without, alternately.
	body_is '.result.segments | length == 3'
	body_is '[.result.segments[] | has("speaker")] | .[0] != .[1] and .[1] != .[2]'
	# Every request is logged: 5 GETs of the answer, 3 of them 404s.
	[ "$(task_polls "$id")" -eq 5 ]
	[ "$(logged ".path == \"/task/$id\" and .status == 404")" -eq 3 ]
	[ "$(logged ".path == \"/tasks/$id/progress\" and .status == 404")" -ge 1 ]
}

@test "task: the task routes want the token like the TUS routes" {
	backend_start --token s3cret --task-delay 0 --task-step-ms 10
	for r in "GET /task/x" "GET /tasks/x/progress" "GET /task/all" "DELETE /task/x/delete"; do
		read -r m p <<<"$r"
		[ "$(task_req "$m" "$p")" = 401 ]
		grep -qi '^WWW-Authenticate: Bearer realm="whisperx"' "$T/task.hdr"
		[ "$(task_req "$m" "$p" -H 'Authorization: Bearer wrong')" = 401 ]
	done
	[ "$(logged '.status == 401')" -eq 8 ]
	# shellcheck disable=SC2034 # read by the task helpers in common.bash
	TASK_AUTH=(-H 'Authorization: Bearer s3cret')
	[ "$(task_req GET /task/x)" = 404 ]
	[ "$(task_req GET /task/all)" = 200 ]
	mkmedia "$T/rec.wav" --seconds 2
	id=$(uuid)
	tus_upload "$T/rec.wav" filename rec.wav taskId "$id" >/dev/null
	wait_task "$id" completed 10
	[ "$(task_req GET "/task/$id")" = 200 ]
	assert_task_shape rec.wav en 2
	[ "$(task_req DELETE "/task/$id/delete")" = 200 ]
}

@test "task: a file that is not audio or video fails; media is told by its magic bytes, not its name" {
	backend_start --task-delay 0 --task-step-ms 10
	printf 'just some notes, no audio at all\n' >"$T/notes.txt"
	id=$(uuid)
	tus_upload "$T/notes.txt" filename notes.wav taskId "$id" >/dev/null
	wait_task "$id" failed 5
	body_is '.status == "failed" and .progress_stage == null
		and .error == "unsupported file: not an audio or video format"'
	[ "$(task_req GET "/task/$id")" = 200 ]
	body_is '.status == "failed" and .result == null
		and .error == "unsupported file: not an audio or video format"
		and .metadata.file_name == "notes.wav" and .metadata.audio_duration == null
		and (.metadata.end_time | type == "string")'
	# An empty file, and RIFF that is not WAVE, are not media either.
	: >"$T/empty"
	printf 'RIFF\x10\0\0\0AVI LIST' >"$T/avi"
	# Each kind of media magic is transcribed (the fake one does not decode).
	printf 'RIFF\x24\0\0\0WAVEfmt ' >"$T/m.wav"
	printf 'ID3\x04\0\0\0\0\0\0' >"$T/m.mp3"
	printf '\xff\xfb\x90\x64' >"$T/m.mpa"
	printf 'OggS\0\x02' >"$T/m.ogg"
	printf 'fLaC\0\0\0\x22' >"$T/m.flac"
	printf '\0\0\0\x20ftypisom' >"$T/m.mp4"
	printf '\x1a\x45\xdf\xa3\x9f\x42\x86\x81' >"$T/m.webm"
	for f in empty avi m.wav m.mp3 m.mpa m.ogg m.flac m.mp4 m.webm; do
		[ "$f" = empty ] || head -c 4000 /dev/zero >>"$T/$f"
		ids[${#ids[@]}]=$(uuid)
		tus_upload "$T/$f" filename "$f" taskId "${ids[-1]}" >/dev/null
	done
	for i in 0 1; do
		wait_task "${ids[$i]}" failed 5
		body_is '.error == "unsupported file: not an audio or video format"'
	done
	for i in $(seq 2 8); do
		wait_task "${ids[$i]}" completed 5
	done
}

@test "task: --task-fail fails every task, with the default message or the one given" {
	backend_start --task-fail --task-delay 0 --task-step-ms 150
	mkmedia "$T/rec.wav" --seconds 3
	id=$(uuid)
	tus_upload "$T/rec.wav" filename rec.wav taskId "$id" >/dev/null
	wait_task "$id" processing 5
	wait_task "$id" failed 5
	body_is '.progress_stage == "transcribing" and .progress_percentage == 25
		and .error == "transcription failed: the model could not decode the audio"'
	[ "$(task_req GET "/task/$id")" = 200 ]
	body_is '.status == "failed" and .result == null
		and .error == "transcription failed: the model could not decode the audio"
		and (.metadata.end_time | type == "string") and (.metadata.duration | type == "number")'
	backend_reset
	backend_start --task-delay 0 --task-step-ms 10 --task-fail 'CUDA out of memory: ĀĒĪ'
	id=$(uuid)
	tus_upload "$T/rec.wav" filename rec.wav taskId "$id" >/dev/null
	wait_task "$id" failed 5
	[ "$(task_req GET "/task/$id")" = 200 ]
	body_is '.status == "failed" and .result == null and .error == "CUDA out of memory: ĀĒĪ"'
}

# garbage_is KIND: the last task_req answer is KIND of garbage.
garbage_is() {
	case $1 in
	html)
		grep -qi '^Content-Type: text/html' "$T/task.hdr"
		grep -q '<html' "$T/task.body"
		! jq -e . "$T/task.body" >/dev/null 2>&1 || false
		;;
	truncated)
		grep -qi '^Content-Type: application/json' "$T/task.hdr"
		! jq -e . "$T/task.body" >/dev/null 2>&1 || false
		;;
	types)
		body_is '(.status | type == "number") and (.result | type == "string")
			and (.metadata | type == "array")'
		;;
	segments)
		body_is '.status == "completed" and any(.result.segments[]; has("end") | not)
			and any(.result.segments[]; has("text") | not)'
		;;
	esac
}

@test "task: --task-garbage answers each kind of garbage N times per task, then the real answer" {
	mkmedia "$T/rec.wav" --seconds 8 --seed 5
	for kind in html truncated types segments; do
		backend_reset
		backend_start --task-delay 0 --task-step-ms 10 --task-garbage "$kind" --task-garbage-count 2
		id=$(uuid)
		# Before the task exists: a plain 404, not counted.
		[ "$(task_req GET "/task/$id")" = 404 ]
		body_is '. == {"detail": "Task not found"}'
		tus_upload "$T/rec.wav" filename rec.wav taskId "$id" >/dev/null
		wait_task "$id" completed 5
		for n in 1 2; do
			[ "$(task_req GET "/task/$id")" = 200 ]
			garbage_is "$kind"
			cp "$T/task.body" "$T/garbage.$n"
		done
		[ "$(task_req GET "/task/$id")" = 200 ]
		assert_task_shape rec.wav en 8
		if [ "$kind" = truncated ]; then
			cmp "$T/garbage.1" <(head -c $(($(stat -c %s "$T/task.body") / 2)) "$T/task.body")
		fi
		[ "$(logged '.fault == "garbage" and .status == 200')" -eq 2 ]
		[ "$(logged ".path == \"/task/$id\" and .status == 404 and (has(\"fault\") | not)")" -eq 1 ]
		# The progress route is left alone.
		[ "$(logged ".path == \"/tasks/$id/progress\" and has(\"fault\")")" -eq 0 ]
	done
	# No count: garbage for ever; another task has its own count.
	backend_reset
	backend_start --task-delay 0 --task-step-ms 10 --task-garbage html
	id=$(uuid)
	tus_upload "$T/rec.wav" filename rec.wav taskId "$id" >/dev/null
	wait_task "$id" completed 5
	for n in 1 2 3 4; do
		[ "$(task_req GET "/task/$id")" = 200 ]
		garbage_is html
	done
	[ "$(logged '.fault == "garbage"')" -eq 4 ]
}

@test "task: --task-garbage huge streams 50 MiB of JSON, and a client may walk away from it" {
	mkmedia "$T/rec.wav" --seconds 4
	backend_start --task-delay 0 --task-step-ms 10 --task-garbage huge --task-garbage-count 2
	id=$(uuid)
	tus_upload "$T/rec.wav" filename rec.wav taskId "$id" >/dev/null
	wait_task "$id" completed 5
	[ "$(task_req GET "/task/$id")" = 200 ]
	grep -qi '^Content-Type: application/json' "$T/task.hdr"
	grep -qi '^Content-Length: 52428800' "$T/task.hdr"
	[ "$(stat -c %s "$T/task.body")" -eq 52428800 ]
	body_is '.status == "processing" and .result == null and .metadata.file_name == "rec.wav"
		and (.padding | length) > 52000000'
	rm "$T/task.body"
	# Streamed, not built: the backend never held anything like 50 MiB more.
	hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$BACKEND_PID/status")
	echo "# backend peak RSS ${hwm} kB" >&3
	[ "$hwm" -lt 150000 ] || { echo "backend peak RSS ${hwm} kB"; return 1; }
	# A client that reads 64 KiB and hangs up; the backend carries on.
	curl -sS "http://127.0.0.1:$PORT/task/$id" 2>/dev/null | head -c 65536 >/dev/null || true
	[ "$(task_req GET "/task/$id")" = 200 ]
	assert_task_shape rec.wav en 4
	[ "$(logged '.fault == "garbage"')" -eq 2 ]
}

@test "task: --task-slow-ms holds every task answer, not the TUS ones" {
	backend_start --task-delay 0 --task-step-ms 10 --task-slow-ms 600
	t0=$(now_ms)
	[ "$(task_req GET /task/nope)" = 404 ]
	t1=$(now_ms)
	[ "$(task_req GET /task/all)" = 200 ]
	t2=$(now_ms)
	[ $((t1 - t0)) -ge 550 ]
	[ $((t2 - t1)) -ge 550 ]
	# A client that gives up is logged unanswered.
	[ "$(task_req GET /task/nope --max-time 0.2)" = 000 ]
	mkmedia "$T/rec.wav" --seconds 2
	id=$(uuid)
	t0=$(now_ms)
	tus_upload "$T/rec.wav" filename rec.wav taskId "$id" >/dev/null
	[ $(($(now_ms) - t0)) -lt 450 ]
	wait_task "$id" completed 10
	[ "$(logged '.fault == "slow" and .status == null')" -eq 1 ]
	[ "$(logged '.method == "POST" and has("fault")')" -eq 0 ]
}

@test "task: /task/all lists and pages, delete removes; tasks survive a restart" {
	backend_start --task-delay 0 --task-step-ms 10 --without termination
	mkmedia "$T/a.wav" --seconds 3 --seed 1
	mkmedia "$T/b.wav" --seconds 3 --seed 2
	printf 'not audio' >"$T/c.txt"
	a=$(uuid) b=$(uuid) c=$(uuid)
	tus_upload "$T/a.wav" filename a.wav taskId "$a" >/dev/null
	tus_upload "$T/b.wav" filename b.wav taskId "$b" >/dev/null
	tus_upload "$T/c.txt" filename c.txt taskId "$c" >/dev/null
	wait_task "$a" completed 5
	wait_task "$b" completed 5
	wait_task "$c" failed 5
	[ "$(task_req GET /task/all)" = 200 ]
	body_is "keys == [\"page\", \"page_size\", \"tasks\", \"total\"] and .total == 3
		and .page == 1 and .page_size == 50
		and [.tasks[].identifier] == [\"$a\", \"$b\", \"$c\"]
		and [.tasks[].file_name] == [\"a.wav\", \"b.wav\", \"c.txt\"]
		and [.tasks[].status] == [\"completed\", \"completed\", \"failed\"]"
	[ "$(task_req GET '/task/all?page=2&page_size=2')" = 200 ]
	body_is ".total == 3 and .page == 2 and .page_size == 2 and [.tasks[].identifier] == [\"$c\"]"
	[ "$(task_req GET '/task/all?status=failed')" = 200 ]
	body_is ".total == 1 and .tasks[0].identifier == \"$c\""
	for q in page=0 page=x page_size=0 page_size=201; do
		[ "$(task_req GET "/task/all?$q")" = 422 ]
		body_is ".detail[0].loc == [\"query\", \"${q%%=*}\"]"
	done

	[ "$(task_req DELETE "/task/$b/delete")" = 200 ]
	body_is ". == {\"identifier\": \"$b\", \"message\": \"Task deleted\"}"
	[ "$(task_req GET "/task/$b")" = 404 ]
	[ "$(task_req GET "/tasks/$b/progress")" = 404 ]
	[ "$(task_req DELETE "/task/$b/delete")" = 404 ]
	body_is '. == {"detail": "Task not found"}'
	[ "$(task_req GET "/task/$a/delete")" = 405 ]
	[ "$(task_req DELETE "/task/$a")" = 405 ]
	[ "$(task_req GET /task/all)" = 200 ]
	body_is ".total == 2 and [.tasks[].identifier] == [\"$a\", \"$c\"]"
	# --without termination is about TUS DELETE only.
	[ "$(curl -sS -o /dev/null -w '%{http_code}' -X DELETE -H 'Tus-Resumable: 1.0.0' "$ENDPOINT/x")" = 405 ]

	# A task called "all" does not hide the list.
	tus_upload "$T/a.wav" filename all.wav taskId all >/dev/null
	wait_task all completed 5
	[ "$(task_req GET /task/all)" = 200 ]
	body_is '.total == 3 and .tasks[2].identifier == "all"'

	# Restarted on the same directory: the same tasks, the same answers.
	task_get "$a" >"$T/a.before"
	backend_stop
	backend_start --task-delay 0 --task-step-ms 10
	[ "$(task_req GET /task/all)" = 200 ]
	body_is ".total == 3 and [.tasks[].identifier] == [\"$a\", \"$c\", \"all\"]"
	task_get "$a" >"$T/a.after"
	cmp "$T/a.before" "$T/a.after"
	[ "$(task_req GET "/task/$b")" = 404 ]
}

@test "task: the fake transcript depends on the file's bytes only, on any machine" {
	mkmedia "$T/one.wav" --seconds 9 --seed 42
	mkmedia "$T/two.wav" --seconds 9 --seed 42
	mkmedia "$T/other.wav" --seconds 9 --seed 43
	cmp "$T/one.wav" "$T/two.wav"
	[ "$(sha "$T/one.wav")" != "$(sha "$T/other.wav")" ]
	# Byte for byte what it was when this test was written.
	[ "$(sha "$T/one.wav")" = b4c93fcec3706b958f496723be1f0fd8f64a91da9b49d6517a100f138903a6c9 ]
	backend_start --task-delay 0 --task-step-ms 10
	one=$(uuid) two=$(uuid) other=$(uuid)
	tus_upload "$T/one.wav" filename one.wav taskId "$one" >/dev/null
	tus_upload "$T/two.wav" filename 'two ūdens.wav' taskId "$two" language lv >/dev/null
	tus_upload "$T/other.wav" filename other.wav taskId "$other" >/dev/null
	for id in "$one" "$two" "$other"; do wait_task "$id" completed 5; done
	[ "$(task_req GET "/task/$one")" = 200 ]
	assert_task_shape one.wav en 9
	jq -S -c .result.segments "$T/task.body" >"$T/one.seg"
	[ "$(task_req GET "/task/$two")" = 200 ]
	assert_task_shape 'two ūdens.wav' lv 9
	jq -S -c .result.segments "$T/task.body" >"$T/two.seg"
	[ "$(task_req GET "/task/$other")" = 200 ]
	jq -S -c .result.segments "$T/task.body" >"$T/other.seg"
	cmp "$T/one.seg" "$T/two.seg"
	[ "$(sha "$T/one.seg")" != "$(sha "$T/other.seg")" ]
	# 9 s: 2 segments, one with a speaker and one without.
	jq -e 'length == 2 and ([.[] | has("speaker")] | sort) == [false, true]' "$T/one.seg" >/dev/null
	# And what it was when this test was written.
	text=$(jq -r '.[0].text' "$T/one.seg")
	[ "$text" = ' Upload morning señor straße there café later Привет?' ] || { echo "$text"; return 1; }
}

@test "task: --transcriber pocketsphinx transcribes speech, and fails with sox's message" {
	for p in sox pocketsphinx_continuous espeak-ng; do
		command -v "$p" >/dev/null || skip "$p is not installed (scripts/deps.sh)"
	done
	espeak-ng -w "$T/hello.wav" "Hello world. This is a test of the transcription service."
	backend_start --transcriber pocketsphinx --task-delay 0 --task-step-ms 50
	id=$(uuid)
	tus_upload "$T/hello.wav" filename hello.wav taskId "$id" >/dev/null
	wait_task "$id" completed 30
	[ "$(task_req GET "/task/$id")" = 200 ]
	secs=$(jq .metadata.audio_duration "$T/task.body")
	assert_task_shape hello.wav en "$secs"
	body_is '.metadata.audio_duration > 3 and .metadata.audio_duration < 4.5
		and ([.result.segments[].text] | add | test("[a-z]"))'
	echo "# recognised: $(jq -r '[.result.segments[].text] | add' "$T/task.body")" >&3

	printf 'fLaC-but-not-really' >"$T/bad.flac"
	id=$(uuid)
	tus_upload "$T/bad.flac" filename bad.flac taskId "$id" >/dev/null
	wait_task "$id" failed 30
	body_is '.error | startswith("sox failed") and test("FLAC")'
	[ "$(task_req GET "/task/$id")" = 200 ]
	body_is '.status == "failed" and .result == null and (.error | startswith("sox failed"))'
}

@test "bad task switches are refused with a message" {
	srv=$BACKEND/server.js
	for args in "--transcriber whisper" "--task-garbage xml" "--task-garbage-count 2" \
		"--task-garbage html --task-garbage-count 0" "--task-delay x" "--task-step-ms -1" \
		"--task-slow-ms 1.5" "--task-fail="; do
		# shellcheck disable=SC2086
		run node "$srv" --dir "$STORE" $args
		[ "$status" -eq 2 ] || { echo "accepted: $args"; return 1; }
		[[ "${lines[0]}" == "server.js: "* ]]
	done
	run node "$srv" --help
	[[ "$output" == *"--task-garbage KIND"* ]]
	[[ "$output" == *"--transcriber fake|pocketsphinx"* ]]
}

# --- --profile tuspyserver (tuspyserver 4.2.3 and the service's hook) ---

# tcreate LENGTH FILENAME [TASKID] [curl options...]: a new upload with
# filename and filetype metadata (and taskId); prints its URL.
tcreate() {
	local len=$1 name=$2 task=${3:-}
	shift 3 2>/dev/null || shift $#
	local meta="filename $(b64 "$name"),filetype $(b64 audio/wav)"
	[ -n "$task" ] && meta="$meta,taskId $(b64 "$task")"
	curl -sS -o /dev/null -D - -X POST -H 'Tus-Resumable: 1.0.0' \
		-H "Upload-Length: $len" -H "Upload-Metadata: $meta" "$@" "$ENDPOINT" |
		tr -d '\r' | awk 'tolower($1) == "location:" { print $2 }'
}

# status METHOD URL [curl options...]: prints the status; body in $T/body.
status() {
	local method=$1 url=$2
	shift 2
	curl -sS -o "$T/body" -w '%{http_code}' -X "$method" "$@" "$url" 2>/dev/null || true
}

@test "tuspyserver: OPTIONS offers its six extensions and 5 GiB; 412 without Tus-Resumable, OPTIONS aside" {
	backend_start --profile tuspyserver
	curl -sS -o /dev/null -D "$T/h" -X OPTIONS "$ENDPOINT"
	tr -d '\r' <"$T/h" >"$T/hdr"
	grep -qx 'HTTP/1.1 204 No Content' "$T/hdr"
	grep -qix 'Tus-Extension: creation,creation-defer-length,creation-with-upload,expiration,termination,concatenation' "$T/hdr"
	grep -qix 'Tus-Max-Size: 5368709120' "$T/hdr"
	grep -qix 'Tus-Version: 1.0.0' "$T/hdr"
	[ "$(status POST "$ENDPOINT" -H 'Upload-Length: 3')" = 412 ]
	url=$(tcreate 3 a.wav)
	[ "$(status HEAD "$url" -I)" = 412 ]
	[ "$(status DELETE "$url")" = 412 ]
	backend_reset
	backend_start --profile tuspyserver --max-size 1000
	curl -sS -o /dev/null -D - -X OPTIONS "$ENDPOINT" | tr -d '\r' | grep -qix 'Tus-Max-Size: 1000'
}

@test "tuspyserver: the hook runs on the completing PATCH only: a whole-file creation-with-upload POST gets no task" {
	backend_start --profile tuspyserver --task-delay 0
	mkmedia "$T/a.wav" --seconds 1
	TASK_AUTH=()
	url=$(tus_upload "$T/a.wav" filename one.wav filetype audio/wav taskId task-one)
	[ "$(head_offset "$url")" = "200 $(stat -c %s "$T/a.wav")" ]
	sleep 0.3
	[ "$(hook_runs)" = 0 ]
	[ "$(task_req GET /task/task-one)" = 404 ]
	assert_stored one.wav "$T/a.wav"

	url=$(tcreate "$(stat -c %s "$T/a.wav")" two.wav task-two)
	[ "$(patch "$url" 0 "$T/a.wav")" = 204 ]
	[ "$(hook_runs --ok two.wav)" = 1 ]
	[ "$(hook_runs)" = 1 ]
	wait_task task-two any
	# A 0-byte upload runs it on its POST.
	tcreate 0 empty.wav task-empty >/dev/null
	[ "$(hook_runs --ok empty.wav)" = 1 ]
	jq -e 'select(.filename == "empty.wav") | .trigger == "post"' "$STORE/.hooks.jsonl"
}

@test "tuspyserver: any PATCH that finds the upload complete runs the hook again" {
	backend_start --profile tuspyserver
	printf 'hello' >"$T/five"
	: >"$T/none"
	url=$(tcreate 5 again.wav task-again)
	[ "$(patch "$url" 0 "$T/five")" = 204 ]
	[ "$(patch "$url" 5 "$T/none")" = 204 ]
	[ "$(hook_runs again.wav)" = 2 ]
	[ "$(hook_runs_by_task)" = "task-again 2 2" ]
	jq -e -s 'map(.trigger) == ["patch", "patch"]' "$STORE/.hooks.jsonl"
}

@test "tuspyserver: HEAD wants filename and filetype; PATCH refusals, some after the bytes were stored" {
	backend_start --profile tuspyserver
	url=$(create 3)
	[ "$(status HEAD "$url" -I -H 'Tus-Resumable: 1.0.0')" = 400 ]
	url=$(curl -sS -o /dev/null -D - -X POST -H 'Tus-Resumable: 1.0.0' -H 'Upload-Length: 3' \
		-H "Upload-Metadata: name $(b64 x.wav),type $(b64 audio/wav)" "$ENDPOINT" |
		tr -d '\r' | awk 'tolower($1) == "location:" { print $2 }')
	[ "$(head_offset "$url")" = "200 0" ]

	printf 'abcdefghij' >"$T/ten"
	url=$(tcreate 10 r.wav)
	# Refused before the body: no Upload-Offset (400), a wrong one (409).
	[ "$(status PATCH "$url" -H 'Tus-Resumable: 1.0.0' \
		-H 'Content-Type: application/offset+octet-stream' --data-binary @"$T/ten")" = 400 ]
	[ "$(patch "$url" 4 "$T/ten")" = 409 ]
	[ "$(head_offset "$url")" = "200 0" ]
	# Chunked, no Content-Length: 422, but the bytes are kept.
	[ "$(status PATCH "$url" -H 'Tus-Resumable: 1.0.0' -H 'Transfer-Encoding: chunked' \
		-H 'Content-Type: application/offset+octet-stream' -H 'Upload-Offset: 0' --data-binary abc)" = 422 ]
	jq -e '.detail[0].loc == ["header", "content-length"]' "$T/body"
	[ "$(head_offset "$url")" = "200 3" ]
	# Another Content-Type: 415, the bytes kept too.
	[ "$(status PATCH "$url" -H 'Tus-Resumable: 1.0.0' -H 'Content-Type: application/octet-stream' \
		-H 'Upload-Offset: 3' --data-binary de)" = 415 ]
	[ "$(head_offset "$url")" = "200 5" ]
	# Past the declared length: 400, nothing saved.
	[ "$(patch "$url" 5 "$T/ten")" = 400 ]
	[ "$(head_offset "$url")" = "200 5" ]
	[ "$(hook_runs)" = 0 ]
	[ "$(status DELETE "$url" -H 'Tus-Resumable: 1.0.0')" = 204 ]
	[ "$(status DELETE "$url" -H 'Tus-Resumable: 1.0.0')" = 404 ]
	[ "$(head_offset "$url")" = "404 -" ]
}

@test "tuspyserver: a PATCH waits --lock-wait-ms for the upload's lock, then 503; the other upload is not held" {
	backend_start --profile tuspyserver --lock-wait-ms 400
	head -c 30000 /dev/zero >"$T/slow"
	url=$(tcreate 30000 slow.wav)
	other=$(tcreate 3 other.wav)
	curl -sS -o /dev/null --limit-rate 15k -X PATCH -H 'Tus-Resumable: 1.0.0' \
		-H 'Content-Type: application/offset+octet-stream' -H 'Upload-Offset: 0' \
		--data-binary @"$T/slow" "$url" &
	slow=$!
	sleep 0.3
	[ "$(head_offset "$other")" = "200 0" ]
	start=$(date +%s%N)
	printf 'abc' >"$T/abc"
	[ "$(patch "$url" 0 "$T/abc")" = 503 ]
	ms=$((($(date +%s%N) - start) / 1000000))
	[ "$ms" -ge 350 ]
	[ "$ms" -lt 1500 ]
	wait "$slow"
	[ "$(head_offset "$url")" = "200 30000" ]
}

@test "tuspyserver: a client gone mid-body leaves the bytes received" {
	backend_start --profile tuspyserver
	head -c 100000 /dev/zero >"$T/big"
	url=$(tcreate 100000 gone.wav)
	curl -sS -o /dev/null --max-time 1 --limit-rate 20k -X PATCH -H 'Tus-Resumable: 1.0.0' \
		-H 'Content-Type: application/offset+octet-stream' -H 'Upload-Offset: 0' \
		--data-binary @"$T/big" "$url" 2>/dev/null || true
	sleep 0.2
	read -r code offset < <(head_offset "$url")
	[ "$code" = 200 ]
	[ "$offset" -gt 0 ]
	[ "$offset" -lt 100000 ]
	[ "$(stored_bytes gone.wav)" = "$offset" ]
}

@test "tuspyserver --service-hook: a .wav that is no audio answers 500 with a JSON error, stays complete, gets no task" {
	backend_start --profile tuspyserver --service-hook --task-delay 0
	head -c 2000 /dev/urandom >"$T/noise"
	url=$(tcreate 2000 noise.wav task-noise)
	[ "$(patch "$url" 0 "$T/noise")" = 500 ]
	status PATCH "$url" -H 'Tus-Resumable: 1.0.0' -H 'Content-Type: application/offset+octet-stream' \
		-H 'Upload-Offset: 2000' -H 'Content-Length: 0' >"$T/code"
	[ "$(cat "$T/code")" = 500 ]
	jq -e '.error.code == "INTERNAL_ERROR" and (.error.message | type) == "string"' "$T/body"
	[ "$(head_offset "$url")" = "200 2000" ]
	[ "$(hook_runs --refused noise.wav)" = 2 ]
	[ "$(hook_runs --ok)" = 0 ]
	jq -e -s '.[0].reason | test("Unknown file format")' "$STORE/.hooks.jsonl"
	[ "$(task_req GET /task/task-noise)" = 404 ]
	assert_stored noise.wav "$T/noise"

	# An MP3 named .wav: a mismatch. An empty upload: refused on its POST.
	node -e 'const f = Buffer.alloc(417); f.set([0xff, 0xfb, 0x90, 0x64]);
		require("fs").writeFileSync(process.argv[1], Buffer.concat([f, f, f, f]))' "$T/mp3"
	url=$(tcreate 1668 mp3.wav task-mp3)
	[ "$(patch "$url" 0 "$T/mp3")" = 500 ]
	jq -e -s 'map(select(.filename == "mp3.wav"))[0].reason | test("claimed .wav but detected .mp3")' "$STORE/.hooks.jsonl"
	[ "$(status POST "$ENDPOINT" -H 'Tus-Resumable: 1.0.0' -H 'Upload-Length: 0' \
		-H "Upload-Metadata: filename $(b64 e.wav),filetype $(b64 audio/wav)")" = 500 ]
	[ "$(hook_runs --refused e.wav)" = 1 ]
}

@test "tuspyserver --service-hook: the file is taken (404 from then on), the decode holds only its PATCH, the task exists when it answers" {
	backend_start --profile tuspyserver --service-hook --decode-ms 1500 --task-delay 5000
	mkmedia "$T/a.wav" --seconds 1
	size=$(stat -c %s "$T/a.wav")
	url=$(tcreate "$size" take.wav task-take)
	other=$(tcreate 3 other.wav)
	patch "$url" 0 "$T/a.wav" >"$T/final" &
	final=$!
	sleep 0.5
	# Decoding: the upload answers 404, the task does not exist yet, and
	# other requests are answered at once.
	[ "$(head_offset "$url")" = "404 -" ]
	[ "$(task_req GET /task/task-take)" = 404 ]
	start=$(date +%s%N)
	[ "$(head_offset "$other")" = "200 0" ]
	[ $((($(date +%s%N) - start) / 1000000)) -lt 500 ]
	wait "$final"
	[ "$(cat "$T/final")" = 204 ]
	# Created before the answer, whatever --task-delay says.
	[ "$(task_req GET /task/task-take)" = 200 ]
	[ "$(jq -r .metadata.file_name "$T/task.body")" = take.wav ]
	[ "$(head_offset "$url")" = "404 -" ]
	[ "$(patch "$url" "$size" /dev/null)" = 404 ]
	[ "$(hook_runs --ok take.wav)" = 1 ]
	# inspect lists the taken bytes.
	assert_stored take.wav "$T/a.wav"
	id=${url##*/}
	[ -f "$STORE/.taken/$id.wav" ]
	[ "$(inspect --json | jq -r --arg id "$id" '.[] | select(.id == $id) | .taken')" = ".taken/$id.wav" ]
	wait_task task-take completed
	# The task survives a restart.
	backend_stop
	backend_start --profile tuspyserver --service-hook
	[ "$(task_req GET /task/task-take)" = 200 ]
}

@test "tuspyserver --service-hook: a client gone during the decode still gets its task" {
	backend_start --profile tuspyserver --service-hook --decode-ms 800
	mkmedia "$T/a.wav" --seconds 1
	url=$(tcreate "$(stat -c %s "$T/a.wav")" left.wav task-left)
	[ "$(patch "$url" 0 "$T/a.wav" --max-time 0.3)" = 000 ]
	wait_task task-left any 5
	[ "$(hook_runs --ok left.wav)" = 1 ]
}

@test "tuspyserver: --token guards POST and PATCH (a PATCH stores its bytes first), not OPTIONS, HEAD or DELETE" {
	backend_start --profile tuspyserver --token sekret
	auth=(-H 'Authorization: Bearer sekret')
	[ "$(status OPTIONS "$ENDPOINT")" = 204 ]
	[ "$(status POST "$ENDPOINT" -H 'Tus-Resumable: 1.0.0' -H 'Upload-Length: 5')" = 401 ]
	url=$(tcreate 5 key.wav task-key "${auth[@]}")
	[ -n "$url" ]
	printf 'hello' >"$T/five"
	[ "$(patch "$url" 0 "$T/five")" = 401 ]
	[ "$(head_offset "$url")" = "200 5" ]
	[ "$(hook_runs)" = 0 ]
	[ "$(task_req GET '/task/all?page_size=1')" = 401 ]
	[ "$(status DELETE "$url" -H 'Tus-Resumable: 1.0.0')" = 204 ]
}

@test "tuspyserver: fault switches: --cut-after stores N bytes and drops the connection, --fail-share stores nothing" {
	backend_start --profile tuspyserver --cut-after 1000
	head -c 5000 /dev/urandom >"$T/data"
	url=$(tcreate 5000 cut.wav)
	[ "$(patch "$url" 0 "$T/data")" = 000 ]
	[ "$(head_offset "$url")" = "200 1000" ]
	[ "$(requests PATCH | jq -r .fault)" = cut ]
	[ "$(patch "$url" 1000 "$(piece "$T/data" 1000 4000)")" = 204 ]
	assert_stored cut.wav "$T/data"
	backend_reset
	backend_start --profile tuspyserver --fail-share 1 --fail-status 503
	url=$(tcreate 5000 fail.wav)
	[ "$(patch "$url" 0 "$T/data")" = 503 ]
	[ "$(head_offset "$url")" = "200 0" ]
}

@test "tuspyserver: switches that do not apply are refused with a message" {
	for args in "--service-hook" "--decode-ms 10" "--lock-wait-ms 10" \
		"--profile tuspyserver --without termination" "--profile tuspyserver --store discard" \
		"--profile tuspyserver --hostile drip" "--profile tuspyserver --decode-ms 10" "--profile nope"; do
		# shellcheck disable=SC2086
		run node "$BACKEND/server.js" --dir "$STORE" $args
		[ "$status" -eq 2 ]
		[[ "$output" == *"server.js: "* ]]
	done
}
