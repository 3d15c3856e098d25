#!/usr/bin/env bash
# The exerciser's --remount-cmd under run.sh: kill -9 the daemon whose pid
# is in DIR/tusfs.pid, unmount DIR/mnt, and mount it again with the same
# state_dir (options OPTS), writing the new daemon's pid to DIR/tusfs.pid.
# usage: remount.sh DIR ENDPOINT OPTS TUSFS_BIN
set -euo pipefail
S=$1 ENDPOINT=$2 OPTS=$3 BIN=$4
MNT=$S/mnt
pid=$(cat "$S/tusfs.pid")
kill -9 "$pid" 2>/dev/null || true
for _ in $(seq 200); do
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.05
done
if grep -q " $MNT fuse" /proc/mounts; then
	fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT"
fi
echo "remount.sh: killed $pid, mounting again" >>"$S/daemon.log"
"$BIN" -f -o "$OPTS" "$ENDPOINT" "$MNT" </dev/null >/dev/null \
	2>>"$S/daemon.log" &
echo $! >"$S/tusfs.pid"
for _ in $(seq 400); do
	grep -q " $MNT fuse" /proc/mounts && exit 0
	kill -0 "$(cat "$S/tusfs.pid")" 2>/dev/null || break
	sleep 0.05
done
echo "remount.sh: the mount did not come back" >&2
exit 1
