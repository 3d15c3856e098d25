#!/usr/bin/env bats
# The reference backend's fault injection switches (tests/backend/server.js),
# driven with curl alone, no tusfs: each switch does what it says, leaves
# the store as it says, logs "fault" on the requests it hits, and does the
# same again for the same --seed. Also: a backend killed mid-upload and
# restarted on the same port and directory serves the upload on.

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
