#!/usr/bin/env bats
# Security: TLS is verified (a private CA only with cafile, insecure only
# when asked, and said), the token shows nowhere and never leaves the
# endpoint's origin, the state is private whatever the umask, and a hostile
# server's answers (reference backend --hostile) fail cleanly, logged,
# without a crash and without losing a byte. Hostile local names (255
# bytes, newlines, commas, quotes, bytes that are not UTF-8, emoji, escape
# sequences) reach the server's filename and relativePath byte for byte,
# and split no log line and no status output.

load helpers/common

setup() {
	common_setup
}

teardown() {
	common_teardown
}

# stored_complete NAME FILE: a complete upload NAME holds FILE's bytes.
stored_complete() {
	inspect | awk -F'\t' -v n="$1" -v h="$(sha "$2")" \
		'$5 == n && $2 == $3 && $4 == h { ok = 1 } END { exit !ok }' ||
		{ inspect; return 1; }
}

@test "https: a self-signed server is refused without its CA, accepted with it" {
	make_cert srv
	make_cert other
	backend_start --tls-cert "$T/srv.pem" --tls-key "$T/srv.key"
	run timeout 20 "$TUSFS_BIN" -f -o "state_dir=$STATE" "$ENDPOINT" "$MNT"
	[ "$status" -ne 0 ]
	[[ "$output" == *certificate* ]]
	! mounted || false
	run timeout 20 "$TUSFS_BIN" -f -o "state_dir=$STATE,cafile=$T/other.pem" \
		"$ENDPOINT" "$MNT"
	[ "$status" -ne 0 ]
	! mounted || false
	tusfs_mount "cafile=$T/srv.pem,transcripts=off"
	head -c 200000 /dev/urandom >"$T/a"
	cp "$T/a" "$MNT/a.wav"
	"$TUSFS_BIN" wait "$MNT" --timeout 30
	stored_complete a.wav "$T/a"
	! grep -q insecure "$DLOG" || false
	# The opt-out works, and says so.
	tusfs_unmount
	tusfs_mount "insecure,transcripts=off"
	grep -q "insecure: the server's TLS certificate is not verified" "$DLOG"
}

@test "the token shows in no log, status file, xattr, status output or error" {
	local secret=whsk_s3cretT0ken out
	backend_start --token "$secret" --hostile offset-garbage
	printf '%s\n' "$secret" >"$T/key"
	chmod 600 "$T/key"
	tusfs_mount "auth_file=$T/key,log_level=debug,chunk_size=64K"
	head -c 300000 /dev/urandom >"$T/a"
	cp "$T/a" "$MNT/a.wav"
	# The hostile answer fails the upload: an error to show everywhere.
	run "$TUSFS_BIN" wait "$MNT" --timeout 20
	[ "$status" -ne 0 ]
	out=$T/outputs
	{
		printf '%s\n' "$output"
		cat "$MNT/a.wav.status"
		getfattr -d -m - "$MNT/a.wav" "$MNT" 2>&1
		"$TUSFS_BIN" status "$MNT" 2>&1 || true
		"$TUSFS_BIN" status "$MNT" --json 2>&1 || true
		cat "$DLOG" "$REQLOG"
		grep -ra . "$STATE" || true
	} >"$out"
	grep -q "Upload-Offset" "$out"
	! grep -q s3cret "$out" || false
}

@test "a Location on another origin gets the bytes' requests but never the token" {
	backend_start --token whsk_s3cretT0ken --hostile location-foreign
	TUSFS_TOKEN=whsk_s3cretT0ken tusfs_mount "chunk_size=64K,transcripts=off"
	head -c 300000 /dev/urandom >"$T/a"
	cp "$T/a" "$MNT/a.wav"
	run "$TUSFS_BIN" wait "$MNT" --timeout 20
	[ "$status" -ne 0 ]
	# The creation went to the endpoint with the token; what followed
	# went to localhost, without it, and was refused.
	requests POST | grep -q '"auth":true'
	requests PATCH | grep -q '"host":"localhost:'
	! grep '"host":"localhost:' "$REQLOG" | grep -q '"auth":true' || false
	grep -q "401" "$MNT/a.wav.status"
	cmp "$T/a" "$MNT/a.wav"
}

@test "the state is private whatever the umask; the mount checks permissions" {
	local mask
	backend_start
	mask=$(umask)
	umask 000
	tusfs_mount transcripts=off
	umask "$mask"
	echo data >"$MNT/a.wav"
	"$TUSFS_BIN" wait "$MNT" --timeout 20
	[ "$(stat -c %a "$STATE")" = 700 ]
	local f
	for f in "$STATE"/spool "$STATE"/journal; do
		[ "$(stat -c %a "$f")" = 700 ] || { ls -la "$STATE"; return 1; }
	done
	for f in "$STATE"/server "$STATE"/spool/* "$STATE"/journal/*; do
		[ "$(stat -c %a "$f")" = 600 ] || { ls -la "$f"; return 1; }
	done
	grep " $MNT fuse" /proc/mounts | grep -q default_permissions
	# Without allow_other, no other user gets in at all.
	! grep " $MNT fuse" /proc/mounts | grep -q allow_other || false
}

@test "a state directory made by hand with a loose mode is tightened; another user's is refused" {
	backend_start
	mkdir -m 0755 "$STATE"
	tusfs_mount transcripts=off
	[ "$(stat -c %a "$STATE")" = 700 ]
	grep -q "state directory '$STATE' was mode 755; it is 0700 now" "$DLOG"
	tusfs_unmount
	chown nobody "$STATE"
	run timeout 20 "$TUSFS_BIN" -f -o "state_dir=$STATE,transcripts=off" "$ENDPOINT" "$MNT"
	[ "$status" -ne 0 ]
	[[ "$output" == *"belongs to uid $(id -u nobody), not to this user"* ]]
	! mounted || false
}

# hostile KIND PATTERN: the first answer of KIND fails the upload (or one
# try of it) with a log line matching PATTERN; the daemon stays up and
# exits cleanly, and a remount against an honest server stores every byte.
hostile() {
	local kind=$1 pattern=$2
	STATE=$T/state-$kind
	backend_start --hostile "$kind"
	tusfs_mount "chunk_size=64K,stall_timeout=2,transcripts=off"
	head -c 300000 /dev/urandom >"$T/$kind"
	# A failure for good while cp still writes shows at its close (EIO);
	# the bytes are in the spool all the same.
	cp "$T/$kind" "$MNT/$kind.wav" || true
	timeout 30 "$TUSFS_BIN" wait "$MNT" --timeout 20 || true
	grep -qE "$pattern" "$DLOG" || { cat "$DLOG"; return 1; }
	cmp "$T/$kind" "$MNT/$kind.wav"
	tusfs_unmount
	[ "$DAEMON_STATUS" -eq 0 ]
	backend_stop
	backend_start --port "$PORT"
	tusfs_mount "chunk_size=64K,transcripts=off"
	"$TUSFS_BIN" wait "$MNT" --timeout 30
	stored_complete "$kind.wav" "$T/$kind"
	tusfs_unmount
	backend_stop
}

@test "hostile Location headers: missing, empty, over 8 KiB, control bytes, file://" {
	hostile location-missing "POST: HTTP 201 with a missing or invalid Location"
	hostile location-file "POST: HTTP 201 with a missing or invalid Location"
	hostile location-empty "POST: HTTP 201 with a missing or invalid Location"
	hostile location-huge "POST: HTTP 201 with a missing or invalid Location"
	hostile location-control "POST: HTTP 201 with a missing or invalid Location"
}

@test "hostile Upload-Offset: garbage, negative, past what was sent, backwards" {
	hostile offset-garbage "PATCH: malformed Upload-Offset '12abc'"
	hostile offset-negative "PATCH: malformed Upload-Offset '-5'"
	hostile offset-beyond "PATCH: server moved the offset from [0-9]+ to [0-9]+ after"
	hostile offset-backwards "PATCH: server moved the offset from [1-9][0-9]* to [0-9]+ after"
}

@test "hostile answers: 70 KiB of headers, a redirect on PATCH, a slowloris drip, an endless body" {
	hostile headers-huge "answer headers larger than 65536 bytes"
	hostile redirect-patch "PATCH: HTTP 307"
	hostile drip "[Tt]oo slow|[Oo]peration too slow"
	hostile body-endless "answer larger than 1048576 bytes"
}

# hex TEXT: TEXT's bytes in hex, on one line.
hex() {
	printf '%s' "$1" | od -An -v -tx1 | tr -d ' \n'
}

# sent_hex TASKID KEY: the bytes of KEY in the Upload-Metadata of the one
# creation with that taskId, in hex, decoded from the header as it was sent
# (the request log's upload_metadata), not through the store's JS strings.
sent_hex() {
	local m
	m=$(jq -r 'select(.method == "POST" and .status == 201) | .upload_metadata' "$REQLOG" |
		grep -F "taskId $(b64 "$1")")
	[ "$(grep -c . <<<"$m")" -eq 1 ] || { echo "not one creation for $1: $m" >&2; return 1; }
	tr ',' '\n' <<<"$m" | awk -v k="$2" '$1 == k { print $2 }' | base64 -d |
		od -An -v -tx1 | tr -d ' \n'
}

@test "hostile names reach the server byte for byte and split no log line; 256 bytes is too long" {
	backend_start
	tusfs_mount transcripts=off
	local long dir names name rel id i=0 n
	long="$(printf 'é%.0s' $(seq 125))x.wav"  # 255 bytes, 130 characters
	dir=$'dir\nwith, \'quotes" \xff\xfe and 🎧'
	names=("$long"
		$'two\ntusfs 00:00:00.000 error: forged.wav'
		$'cr\rlf\r\n.wav'
		'comma, and,, more.wav'
		"it's \"quoted\".wav"
		$'bad\xff\xfe\xc3(utf8\x80.wav'
		$'🎙\xef\xb8\x8f interview 😀.wav'
		$'esc\e[31mred\e[0m\e]0;title\a.wav'
		'%s%n%x $HOME \back\slash.wav'
		' -lead and trail- '
		"$dir/"$'in\tside.wav')
	[ "$(printf '%s' "$long" | wc -c)" -eq 255 ]
	mkdir "$MNT/$dir"
	for name in "${names[@]}"; do
		i=$((i + 1))
		printf 'content %d of %s\n' "$i" "$name" >"$T/src$i"
		cp "$T/src$i" "$MNT/$name"
	done
	"$TUSFS_BIN" wait "$MNT" --timeout 60

	i=0
	for name in "${names[@]}"; do
		i=$((i + 1))
		id=$(xattr task_id "$name")
		[ -n "$id" ]
		# The server got the name's bytes exactly, and the content.
		[ "$(sent_hex "$id" filename)" = "$(hex "${name##*/}")" ] ||
			{ echo "filename of #$i: $(sent_hex "$id" filename) != $(hex "${name##*/}")"; return 1; }
		inspect | awk -F'\t' -v id="$id" -v h="$(sha "$T/src$i")" -v s="$(stat -c %s "$T/src$i")" \
			'$7 == id && $4 == h && $2 == s && $3 == s { ok = 1 } END { exit !ok }' ||
			{ echo "content of #$i"; inspect; return 1; }
		# relativePath only for the one in a folder, as the whole path.
		rel=$(sent_hex "$id" relativePath)
		if [ "$name" = "${name##*/}" ]; then
			[ -z "$rel" ]
		else
			[ "$rel" = "$(hex "$name")" ]
		fi
		# Its status sidecar (past 255 bytes there is none) is valid JSON.
		[ "$name" = "$long" ] || jq -e '.state == "uploaded"' "$MNT/$name.status" >/dev/null
		[ "$(xattr state "$name")" = uploaded ]
	done
	n=${#names[@]}
	[ "$(requests POST | wc -l)" -eq "$n" ]

	# 256 bytes: too long to create, make or rename to; nothing goes up.
	run bash -c 'echo x >"$1"' _ "$MNT/x$long"
	[ "$status" -ne 0 ]
	[[ "$output" == *"File name too long"* ]]
	run mkdir "$MNT/x$long"
	[[ "$output" == *"File name too long"* ]]
	run mv "$MNT/$dir/"$'in\tside.wav' "$MNT/x$long"
	[[ "$output" == *"File name too long"* ]]
	[ -e "$MNT/$dir/"$'in\tside.wav' ]
	[ ! -e "$MNT/x$long" ]
	# A hostile name's sidecar name is still refused.
	echo x >"$MNT/spare.part"
	run mv "$MNT/spare.part" "$MNT/${names[1]}.status"
	[[ "$output" == *"File exists"* ]]
	jq -e . "$MNT/${names[1]}.status" >/dev/null
	rm "$MNT/spare.part"
	sleep 0.5
	[ "$(requests POST | wc -l)" -eq "$n" ]
	[ "$(inspect --no-hash | wc -l)" -eq "$n" ]

	# The log: one line per message, control characters escaped, the
	# forged line nowhere at the start of a line, no raw escape or CR.
	grep -qF "'two\\ntusfs 00:00:00.000 error: forged.wav': uploaded" "$DLOG"
	grep -qF "'esc\\x1b[31mred\\x1b[0m\\x1b]0;title\\x07.wav': uploaded" "$DLOG"
	grep -qF "'cr\\rlf\\r\\n.wav': uploaded" "$DLOG"
	[ "$(grep -c '^tusfs 00:00:00.000' "$DLOG")" -eq 0 ]
	[ "$(grep -c '^.wav' "$DLOG")" -eq 0 ]
	[ "$(grep -c $'[\e\r\a]' "$DLOG")" -eq 0 ]
	[ "$(grep -cv '^tusfs [0-9:.]* [a-z]*: ' "$DLOG")" -eq 0 ]

	# tusfs status: valid JSON, one object per file; the table has one row
	# per file and no control characters.
	run "$TUSFS_BIN" status "$MNT" --json
	[ "$status" -eq 0 ]
	[ "$(jq 'length' <<<"$output")" -eq "$n" ]
	[ "$(jq '[.[] | select(.state == "uploaded")] | length' <<<"$output")" -eq "$n" ]
	run "$TUSFS_BIN" status "$MNT"
	[ "$status" -eq 0 ]
	[ "${#lines[@]}" -eq $((n + 1)) ]
	[ "$(grep -c $'[\e\r\a\t]' <<<"$output")" -eq 0 ]
	grep -qF 'two\ntusfs 00:00:00.000 error: forged.wav ' <<<"$output"
	grep -qF 'esc\x1b[31mred\x1b[0m\x1b]0;title\x07.wav ' <<<"$output"
	# tusfs wait lists a pending file the same way.
	exec 7>"$MNT/${names[1]}.2"
	echo open >&7
	run "$TUSFS_BIN" wait "$MNT" --timeout 1
	exec 7>&-
	[ "$status" -eq 2 ]
	[ "${#lines[@]}" -eq 2 ]
	[[ "${lines[0]}" == 'tusfs wait: two\ntusfs 00:00:00.000 error: forged.wav.2: still '* ]]
	"$TUSFS_BIN" wait "$MNT" --timeout 30

	# The names survive a remount, byte for byte.
	tusfs_unmount
	tusfs_mount transcripts=off
	i=0
	for name in "${names[@]}"; do
		i=$((i + 1))
		cmp "$T/src$i" "$MNT/$name"
	done
	[ "$(find "$MNT" -mindepth 1 ! -name '*.status' -printf x | wc -c)" -eq $((n + 2)) ]
}
