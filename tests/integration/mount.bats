#!/usr/bin/env bats
# Mounting: the command line, the bearer token (it reaches the server and
# nothing else), and every way a mount can be refused (unreachable, not
# TUS, 401, bad mountpoint) leaving nothing mounted. mount -t fuse.tusfs
# and fstab are in install.bats.

load helpers/common

setup() {
	common_setup
}

teardown() {
	common_teardown
}

@test "--help and --version" {
	run "$TUSFS_BIN" --help
	[ "$status" -eq 0 ]
	[[ "$output" == *"chunk_size"* ]]
	[[ "$output" == *"max_uploads"* ]]
	run "$TUSFS_BIN" --version
	[ "$status" -eq 0 ]
	[[ "$output" == "tusfs "* ]]
}

@test "the bearer token reaches the server and appears in no log" {
	backend_start --token whsk_s3cretT0ken
	printf 'whsk_s3cretT0ken\n' >"$T/key"
	chmod 600 "$T/key"
	tusfs_mount "auth_file=$T/key,log_level=debug"
	echo data >"$MNT/a.wav"
	wait_complete 1
	! grep -q '"auth":false' "$REQLOG" || false
	! grep -q s3cret "$REQLOG" "$DLOG" || false
	# The environment works too.
	tusfs_unmount
	TUSFS_TOKEN=whsk_s3cretT0ken tusfs_mount log_level=debug
	echo more >"$MNT/b.wav"
	wait_complete 2
	! grep -q s3cret "$DLOG" || false
}

@test "a missing or wrong token fails the mount with the 401" {
	backend_start --token right
	run timeout 20 "$TUSFS_BIN" -f -o "state_dir=$STATE" "$ENDPOINT" "$MNT"
	[ "$status" -eq 1 ]
	[ "${#lines[@]}" -eq 1 ]
	[[ "$output" == *"401"* ]]
	TUSFS_TOKEN=wrong run timeout 20 "$TUSFS_BIN" -f -o "state_dir=$STATE" "$ENDPOINT" "$MNT"
	[ "$status" -eq 1 ]
	[[ "$output" == *"401"* ]]
	! mounted || false
}

@test "an auth_file readable by others is refused" {
	backend_start
	echo key >"$T/key"
	chmod 644 "$T/key"
	run timeout 20 "$TUSFS_BIN" -f -o "state_dir=$STATE,auth_file=$T/key" "$ENDPOINT" "$MNT"
	[ "$status" -eq 1 ]
	[[ "$output" == *"chmod 600"* ]]
	! mounted || false
}

@test "an unreachable endpoint fails the mount with one line" {
	# A port that was just free: nothing listens there.
	port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
	run timeout 30 "$TUSFS_BIN" -f -o "state_dir=$STATE" "http://127.0.0.1:$port/uploads/files/" "$MNT"
	[ "$status" -eq 1 ]
	[ "${#lines[@]}" -eq 1 ]
	[[ "$output" == *"cannot use endpoint"* ]]
	! mounted || false
}

@test "an endpoint that is not a TUS server fails the mount" {
	node -e 'const s=require("http").createServer((q,r)=>{r.end("<html>hi</html>")}).listen(0,"127.0.0.1",()=>{require("fs").writeFileSync(process.argv[1],String(s.address().port))})' "$T/plainport" &
	plain=$!
	for _ in $(seq 100); do [ -s "$T/plainport" ] && break; sleep 0.05; done
	run timeout 30 "$TUSFS_BIN" -f -o "state_dir=$STATE" "http://127.0.0.1:$(cat "$T/plainport")/" "$MNT"
	kill "$plain"
	[ "$status" -eq 1 ]
	[[ "$output" == *"not a TUS server"* ]]
	! mounted || false
}

@test "a missing mountpoint or a file as mountpoint is refused clearly" {
	backend_start
	run "$TUSFS_BIN" -f "$ENDPOINT" "$T/nope"
	[ "$status" -eq 1 ]
	[[ "$output" == *"nope"*"No such file or directory"* ]]
	touch "$T/file"
	run "$TUSFS_BIN" -f "$ENDPOINT" "$T/file"
	[ "$status" -eq 1 ]
	[[ "$output" == *"not a directory"* ]]
	run "$TUSFS_BIN" -f -o chunk_size=huge "$ENDPOINT" "$MNT"
	[ "$status" -eq 1 ]
	[[ "$output" == *"invalid chunk_size"* ]]
}
