#!/usr/bin/env bats
# Network and server faults, injected by the reference backend's seeded
# switches, one at a time and mixed: each upload ends byte-identical on the
# server, and a file waiting out a fault does not hold up the others.

load helpers/common

setup() {
	common_setup
	head -c 12000000 /dev/urandom >"$T/src"
}

teardown() {
	common_teardown
}

# through_faults MOUNT_OPTS BACKEND_SWITCHES...: copies a 12 MB file in
# 1 MiB chunks through a backend with those faults; checks the bytes.
through_faults() {
	local opts=$1
	shift
	backend_start "$@"
	tusfs_mount "chunk_size=1M${opts:+,$opts}"
	cp "$T/src" "$MNT/rec.wav"
	"$TUSFS_BIN" wait "$MNT" --timeout 90
	assert_stored rec.wav "$T/src"
	echo "$* -> faults: $(grep -o '"fault":"[a-z]*"' "$REQLOG" | cut -d'"' -f4 |
		sort | uniq -c | tr -s ' \n' ' '); retries: $(grep -c 'retry [0-9]* in' "$DLOG")" >&3
}

# faults NAME: how many requests the backend hit with fault NAME.
faults() {
	grep -c "\"fault\":\"$1\"" "$REQLOG" || true
}

@test "a third of the PATCHes answered 500: retried until complete" {
	through_faults "" --seed 5 --fail-share 0.3
	[ "$(faults fail)" -ge 1 ]
	grep -q "PATCH: HTTP 500" "$DLOG"
}

@test "429 with Retry-After: retried after exactly that long, until complete" {
	through_faults "" --seed 2 --fail-share 0.3 --fail-status 429 --retry-after 1
	[ "$(faults fail)" -ge 1 ]
	grep -q "PATCH: HTTP 429" "$DLOG"
	# Retry-After, not the backoff, set the wait.
	grep -q "retry [0-9]* in 1000 ms" "$DLOG"
}

@test "connections cut mid-body: the server's offset is trusted, nothing else re-sent" {
	through_faults "" --cut-after 300000 --cut-count 3
	[ "$(faults cut)" -eq 3 ]
	# After each cut the next PATCH starts where the stored bytes end.
	node -e '
		const lines = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map(JSON.parse);
		const patches = lines.filter(r => r.method === "PATCH");
		for (let i = 0; i + 1 < patches.length; i++) {
			if (patches[i].fault !== "cut") continue;
			const want = patches[i].upload_offset + 300000;
			if (patches[i + 1].upload_offset !== want) {
				console.error(`after a cut at ${want} the next PATCH sent ${patches[i + 1].upload_offset}`);
				process.exit(1);
			}
		}' "$REQLOG"
}

@test "409 offset conflicts: the offset is re-read with HEAD and sending goes on" {
	through_faults "" --conflict-once
	[ "$(faults conflict)" -eq 1 ]
	[ "$(requests HEAD | wc -l)" -ge 1 ]
}

@test "an upload the server forgot (404) starts again from the spool" {
	through_faults "" --forget-once
	[ "$(faults forget)" -eq 1 ]
	[ "$(requests POST | wc -l)" -eq 2 ]
}

@test "an expired upload (410) starts again from the spool" {
	through_faults "" --expire-once
	[ "$(faults expire)" -eq 1 ]
	[ "$(requests POST | wc -l)" -eq 2 ]
}

@test "a stalled response is abandoned after stall_timeout and resumed" {
	through_faults "stall_timeout=2" --stall-ms 20000 --stall-count 2
	[ "$(faults stall)" -eq 2 ]
	grep -q "stalled: no progress for 2 s" "$DLOG"
}

@test "all faults at once, seeded: complete and byte-identical" {
	through_faults "stall_timeout=2" --seed 11 --fail-share 0.2 \
		--cut-after 500000 --cut-count 2 --conflict-once --forget-once \
		--stall-ms 15000
	for f in fail cut conflict forget stall; do
		[ "$(faults $f)" -ge 1 ] || { echo "no $f fault"; return 1; }
	done
}

@test "a file waiting out a fault does not hold up the others" {
	backend_start --stall-ms 12000
	tusfs_mount chunk_size=1M
	head -c 3000000 /dev/urandom >"$T/other"
	cp "$T/src" "$MNT/stuck.wav"
	# Its first PATCH is stored and its answer held back.
	wait_offset stuck.wav 1048576 30
	cp "$T/other" "$MNT/other.wav"
	wait_offset other.wav 3000000 8
	[ "$(stored_bytes stuck.wav)" -lt 12000000 ]
	"$TUSFS_BIN" wait "$MNT" --timeout 60
	assert_stored stuck.wav "$T/src"
	assert_stored other.wav "$T/other"
}
