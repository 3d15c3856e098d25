#!/usr/bin/env bats
# Security: TLS is verified (a private CA only with cafile, insecure only
# when asked, and said), the token shows nowhere and never leaves the
# endpoint's origin, the state is private whatever the umask, and a hostile
# server's answers (reference backend --hostile) fail cleanly, logged,
# without a crash and without losing a byte.

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
	! mounted
	run timeout 20 "$TUSFS_BIN" -f -o "state_dir=$STATE,cafile=$T/other.pem" \
		"$ENDPOINT" "$MNT"
	[ "$status" -ne 0 ]
	! mounted
	tusfs_mount "cafile=$T/srv.pem,transcripts=off"
	head -c 200000 /dev/urandom >"$T/a"
	cp "$T/a" "$MNT/a.wav"
	"$TUSFS_BIN" wait "$MNT" --timeout 30
	stored_complete a.wav "$T/a"
	! grep -q insecure "$DLOG"
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
	! grep -q s3cret "$out"
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
	! grep '"host":"localhost:' "$REQLOG" | grep -q '"auth":true'
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
	! grep " $MNT fuse" /proc/mounts | grep -q allow_other
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

@test "hostile Location headers: missing, empty, over 8 KiB, control bytes" {
	hostile location-missing "POST: HTTP 201 with a missing or invalid Location"
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

@test "hostile answers: 70 KiB of headers, a redirect on PATCH, a slowloris drip" {
	hostile headers-huge "answer headers larger than 65536 bytes"
	hostile redirect-patch "PATCH: HTTP 307"
	hostile drip "[Tt]oo slow|[Oo]peration too slow"
}
