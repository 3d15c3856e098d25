#!/usr/bin/env bash
# The benchmark: tusfs against its peers, in one run on one machine, so
# that only ratios matter (docs/performance.md says what each row measures
# and what limits it). Builds a Release tusfs and libfuse's passthrough_ll
# example, starts the reference backend twice (storing, and --store discard
# for the client side alone) and the bare sink (bench/sink.mjs, the wire
# row's ceiling), runs every scenario RUNS times interleaved with its
# peers, and prints medians and ratios, then the scale table.
#
# Usage: scripts/bench.sh [--runs N] [--only SCENARIO,...]
# N measured runs after one warm-up round (default 3); SCENARIO is large,
# write, wire, many, ls, memory or scale (default: all).
# BENCH_DIR (default: a new directory under /tmp) holds the data, the spool
# and the stored uploads; it must have about 12 GiB free.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

usage="usage: scripts/bench.sh [--runs N] [--only SCENARIO,...]"
scenarios="large write wire many ls memory scale"
runs=3
while [ $# -gt 0 ]; do
	case $1 in
	--runs) runs=$2; shift 2 ;;
	--only) scenarios=${2//,/ }; shift 2 ;;
	*) echo "$usage" >&2; exit 2 ;;
	esac
done
for s in $scenarios; do
	[[ " large write wire many ls memory scale " == *" $s "* ]] ||
		{ echo "bench: no scenario '$s'" >&2; echo "$usage" >&2; exit 2; }
done

MiB=$((1024 * 1024))
GiB=$((1024 * MiB))
CHUNK=$((50 * MiB))

# --- Setup ------------------------------------------------------------------

./scripts/deps.sh
stamp=bench/node_modules/.tusfs-lock
if ! cmp -s bench/package-lock.json "$stamp" 2>/dev/null; then
	echo "bench: npm ci in bench"
	(cd bench && npm ci --no-audit --no-fund --loglevel=error)
	cp bench/package-lock.json "$stamp"
fi
build=$root/build/bench
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)" --target tusfs >/dev/null
tusfs=$build/tusfs
passthrough=$build/passthrough_ll
# shellcheck disable=SC2046
cc -O2 -o "$passthrough" /usr/share/doc/libfuse3-dev/examples/passthrough_ll.c \
	$(pkg-config fuse3 --cflags --libs)

work=${BENCH_DIR:-$(mktemp -d /tmp/tusfs-bench.XXXXXX)}
mkdir -p "$work"
pids=()
mounts=()
cleanup() {
	for m in "${mounts[@]}"; do
		mountpoint -q "$m" && fusermount3 -u "$m"
	done
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	[ -n "${BENCH_DIR:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

# serve NAME SCRIPT [options]: starts a node server that writes its port to
# --port-file; sets NAME_url.
serve() {
	local name=$1 script=$2 port=$work/$1.port
	shift 2
	rm -f "$port"
	node "$script" --port-file "$port" "$@" >"$work/$name.log" 2>&1 &
	pids+=($!)
	for _ in $(seq 100); do
		[ -s "$port" ] && break
		sleep 0.1
	done
	printf -v "${name}_url" 'http://127.0.0.1:%s/uploads/files/' "$(cat "$port")"
}
# backend NAME [server.js options]: the reference backend; sets NAME_url
# and NAME_dir.
backend() {
	local name=$1
	shift
	mkdir -p "$work/$name"
	printf -v "${name}_dir" '%s' "$work/$name"
	serve "$name" tests/backend/server.js --dir "$work/$name" "$@"
}
backend store
backend discard --store discard
# The bare sink: TUS in plain node http, bytes counted and dropped.
serve sink bench/sink.mjs
# shellcheck disable=SC2154 # set by backend() and serve()
: "$store_url" "$store_dir" "$discard_url" "$sink_url"

# mount ENDPOINT MOUNTPOINT [tusfs options]: a fresh daemon in the
# foreground (so its PID is ours to read); sets daemon.
mount_tusfs() {
	local url=$1 mnt=$2
	shift 2
	rm -rf "$mnt.state"
	mkdir -p "$mnt" "$mnt.state"
	"$tusfs" -f -o "state_dir=$mnt.state,transcripts=off" "$@" "$url" "$mnt" \
		2>>"$work/tusfs.log" &
	daemon=$!
	pids+=("$daemon")
	mounts+=("$mnt")
	for _ in $(seq 100); do
		mountpoint -q "$mnt" && return
		sleep 0.1
	done
	echo "bench: tusfs did not mount $mnt" >&2
	exit 1
}

# libfuse's passthrough_ll over $pll.src at $pll: the write path's peer.
mount_passthrough() {
	pll=$work/pll
	mkdir -p "$pll" "$pll.src"
	"$passthrough" -o "source=$pll.src" "$pll"
	mounts+=("$pll")
}

unmount() { # MOUNTPOINT: and wait for its daemon to exit
	fusermount3 -u "$1"
	wait "$daemon" 2>/dev/null || true
}

now() { date +%s.%N; }
calc() { awk "BEGIN { print $* }"; }

# timed VAR CMD...: runs CMD after flushing dirty pages (so one run's
# writeback does not land on the next) and appends its seconds to array
# VAR, except in round 0: the warm-up, which this VM needs because memory
# its host took back is slow to touch again (docs/performance.md).
round=0
timed() {
	local -n out_=$1
	local start_ took_
	shift
	sync
	start_=$(now)
	"$@"
	took_=$(calc "$(now) - $start_")
	if [ "$round" -eq 0 ]; then
		printf '  %-14s %7.2f s (warm-up)\n' "$1" "$took_"
	else
		printf '  %-14s %7.2f s\n' "$1" "$took_"
		out_+=("$took_")
	fi
}

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

# The daemon's CPU seconds so far and its peak RSS in KiB.
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }
# The CPU seconds of this script's children that have been waited for.
children_cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($16 + $17) / hz}' "/proc/$$/stat"; }
hwm_of() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }

clear_store() { find "$store_dir" -maxdepth 1 -type f -delete; }

upload_wait() { "$tusfs" wait "$1" --timeout 600 >/dev/null; }

# --- Peers ------------------------------------------------------------------

# curl_loop ENDPOINT FILE: POST, then one curl per 50 MiB PATCH.
curl_loop() {
	local size loc off=0 len
	size=$(stat -c %s "$2")
	loc=$(create "$1" "$size" "$2")
	while [ "$off" -lt "$size" ]; do
		len=$((size - off < CHUNK ? size - off : CHUNK))
		dd if="$2" bs=1M iflag=skip_bytes,count_bytes skip="$off" \
			count="$len" status=none |
			patch "$loc" "$off" -H "Content-Length: $len" \
				-H 'Transfer-Encoding:' -T -
		off=$((off + len))
	done
}

# curl_once ENDPOINT FILE: POST, then the whole file in one PATCH.
curl_once() {
	local loc
	loc=$(create "$1" "$(stat -c %s "$2")" "$2")
	patch "$loc" 0 -T "$2"
}

create() { # ENDPOINT SIZE FILE: prints the upload URL
	curl -sSf -D - -o /dev/null -X POST -H 'Tus-Resumable: 1.0.0' \
		-H "Upload-Length: $2" \
		-H "Upload-Metadata: filename $(basename "$3" | base64 -w0)" "$1" |
		tr -d '\r' | sed -n 's/^[Ll]ocation: //p'
}

patch() { # URL OFFSET CURL-ARGS...
	local url=$1 off=$2
	shift 2
	curl -sSf -o /dev/null -X PATCH -H 'Tus-Resumable: 1.0.0' -H 'Expect:' \
		-H "Upload-Offset: $off" \
		-H 'Content-Type: application/offset+octet-stream' "$@" "$url"
}

tusjs() { # ENDPOINT PARALLEL FILE...
	local url=$1 par=$2
	shift 2
	node bench/tusjs.mjs "$url" "$CHUNK" "$par" "$@"
}

# --- Data -------------------------------------------------------------------

echo "bench: writing test data to $work"
data=$work/data
mkdir -p "$data/many"
large=$data/large.wav
[ -s "$large" ] || head -c $((2 * GiB)) /dev/urandom >"$large"
large_size=$(stat -c %s "$large")
if [ ! -s "$data/many/memo1000.wav" ]; then
	for i in $(seq 1000); do
		head -c $((200 * 1024)) /dev/urandom >"$data/many/memo$i.wav"
	done
fi
mnt=$work/mnt

rows=()
row() { # SCENARIO TUSFS PEER RATIO TARGET VERDICT
	rows+=("$(printf '%-34s %12s %26s %6s %7s  %s' "$@")")
}
verdict() { # VALUE OP LIMIT
	if [ "$(calc "($1 $2 $3)")" -eq 1 ]; then echo met; else echo MISSED; fi
}
# shellcheck disable=SC2059 # the format is ours
fmt() { printf "$1" "$(calc "$2")"; }
mbps() { fmt '%.0f MiB/s' "$1 / $2 / $MiB"; }
secs() { fmt '%.2f s' "$1"; }

# rounds BODY: runs function BODY for the warm-up and each measured run.
rounds() {
	for round in $(seq 0 "$runs"); do
		"$1"
	done
	round=1
}

# --- Scenarios --------------------------------------------------------------

copy_large() { cp "$large" "$mnt/" && upload_wait "$mnt"; }
# tus-js-client while a plain cp writes the same bytes to a local file: the
# peer plus the spool write any spooling client adds (the large-file bound).
tusjs_beside() {
	cp "$large" "$work/beside.wav" &
	local cp_pid=$!
	tusjs "$store_url" 1 "$large"
	wait "$cp_pid"
	rm -f "$work/beside.wav"
}

large_round() {
	timed a copy_large
	if [ "$round" -eq 0 ]; then # once: the bytes stored are the file's
		cmp "$large" "$(find "$store_dir" -maxdepth 1 -type f -size +1G)"
	fi
	rm "$mnt/large.wav"
	clear_store
	timed b_curl curl_loop "$store_url" "$large"
	clear_store
	timed b_js tusjs "$store_url" 1 "$large"
	clear_store
	timed b_beside tusjs_beside
	clear_store
}
scenario_large() {
	echo "bench: large file (2 GiB, stored)"
	mount_tusfs "$store_url" "$mnt"
	a=() b_curl=() b_js=() b_beside=()
	cpu0=$(cpu_of "$daemon")
	rounds large_round
	large_cpu=$(calc "($(cpu_of "$daemon") - $cpu0) / (($runs + 1) * $large_size / $GiB)")
	large_hwm=$(hwm_of "$daemon")
	unmount "$mnt"
	ta=$(median "${a[@]}") tc=$(median "${b_curl[@]}") tj=$(median "${b_js[@]}")
	ratio=$(calc "$ta / ($tc < $tj ? $tc : $tj)")
	row "large file 2 GiB: cp + wait" "$(secs "$ta")" "curl loop $(secs "$tc")" "" "" ""
	row "" "" "tus-js-client $(secs "$tj")" "$(fmt %.2f "$ratio")" "<= 1.0" \
		"$(verdict "$ratio" '<=' 1.0)"
	tb=$(median "${b_beside[@]}")
	row "" "" "tus-js-client + cp $(secs "$tb")" "$(fmt %.2f "$ta / $tb")" "" ""
}

dd_into() { dd if=/dev/zero of="$1" bs=1M count=4096 status=none; }
dd_tusfs() { dd_into "$mnt/dd.wav"; }
# A temporary name (-o temp_names): the same writes with no upload beside.
dd_held() { dd_into "$mnt/dd.wav.part"; }
dd_passthrough() { dd_into "$pll/dd.wav"; }
write_round() {
	timed a dd_tusfs
	upload_wait "$mnt"
	rm "$mnt/dd.wav"
	timed b dd_passthrough
	rm "$pll/dd.wav"
	timed c dd_held
	rm "$mnt/dd.wav.part"
}
scenario_write() {
	echo "bench: write path (dd 4 GiB, discarded)"
	mount_tusfs "$discard_url" "$mnt"
	mount_passthrough
	a=() b=() c=()
	rounds write_round
	fusermount3 -u "$pll"
	unmount "$mnt"
	ta=$(median "${a[@]}") tb=$(median "${b[@]}")
	ratio=$(calc "$tb / $ta")
	row "write path: dd bs=1M 4 GiB" "$(mbps $((4 * GiB)) "$ta")" \
		"passthrough_ll $(mbps $((4 * GiB)) "$tb")" "$(fmt %.2f "$ratio")" \
		">= 0.9" "$(verdict "$ratio" '>=' 0.9)"
	tc=$(median "${c[@]}")
	row "  the same, upload held" "$(mbps $((4 * GiB)) "$tc")" "(no upload beside)" \
		"$(fmt %.2f "$tb / $tc")" "" ""
}

# The wire's peer is one curl -T to wire_url, the server the mount is on.
wire_round() {
	timed a copy_large
	rm "$mnt/large.wav"
	timed b curl_once "$wire_url" "$large"
}
# wire URL: the medians of RUNS rounds against URL into ta and tb.
wire() {
	wire_url=$1
	mount_tusfs "$wire_url" "$mnt"
	a=() b=()
	rounds wire_round
	unmount "$mnt"
	ta=$(median "${a[@]}") tb=$(median "${b[@]}")
}
scenario_wire() {
	echo "bench: against the wire (2 GiB, bare sink)"
	wire "$sink_url"
	ratio=$(calc "$tb / $ta")
	row "wire: cp + wait 2 GiB, bare sink" "$(mbps "$large_size" "$ta")" \
		"curl -T $(mbps "$large_size" "$tb")" "$(fmt %.2f "$ratio")" \
		">= 0.5" "$(verdict "$ratio" '>=' 0.5)"
	echo "bench: against the wire (2 GiB, discarded)"
	wire "$discard_url"
	row "  the same, @tus/server discard" "$(mbps "$large_size" "$ta")" \
		"curl -T $(mbps "$large_size" "$tb")" "$(fmt %.2f "$tb / $ta")" "" ""
}

copy_many() { cp -r "$data/many" "$mnt/" && upload_wait "$mnt"; }
many_round() {
	timed a copy_many
	rm -rf "$mnt/many"
	clear_store
	timed b_seq tusjs "$store_url" 1 "$data"/many/*
	clear_store
	timed b_par tusjs "$store_url" 4 "$data"/many/*
	clear_store
}
scenario_many() {
	echo "bench: many files (1000 x 200 KiB, stored)"
	mount_tusfs "$store_url" "$mnt"
	a=() b_seq=() b_par=()
	rounds many_round
	unmount "$mnt"
	ta=$(median "${a[@]}") ts=$(median "${b_seq[@]}") tp=$(median "${b_par[@]}")
	ratio=$(calc "$ta / $ts")
	row "many files: cp -r + wait" "$(secs "$ta")" "tus-js-client 1 $(secs "$ts")" \
		"$(fmt %.2f "$ratio")" "<= 0.5" "$(verdict "$ratio" '<=' 0.5)"
	row "" "" "tus-js-client 4 $(secs "$tp")" "$(fmt %.2f "$ta / $tp")" "" ""
}

# memory SIZE: 4 files of SIZE bytes copied at once (4 uploads in flight)
# into a fresh daemon; sets hwm (KiB) and cpu (s per GiB).
memory() {
	local f=$data/mem.wav cps=() i
	if [ "$1" -le "$large_size" ]; then
		head -c "$1" "$large" >"$f"
	else
		cat "$large" "$large" | head -c "$1" >"$f"
	fi
	mount_tusfs "$discard_url" "$mnt"
	cpu0=$(cpu_of "$daemon")
	for i in 1 2 3 4; do
		cp "$f" "$mnt/mem$i.wav" &
		cps+=($!)
	done
	wait "${cps[@]}"
	upload_wait "$mnt"
	cpu=$(calc "($(cpu_of "$daemon") - $cpu0) / (4 * $1 / $GiB)")
	hwm=$(hwm_of "$daemon")
	unmount "$mnt"
	rm -f "$f"
}
# dd_cpu N FILE: N `dd bs=1M` at once copy FILE to local files, the one
# page-cache write of every byte that any spooling client pays; sets dd
# (CPU s per GiB).
dd_cpu() {
	local n=$1 f=$2 c0 i dds=()
	sync
	c0=$(children_cpu)
	for i in $(seq "$n"); do
		dd if="$f" of="$work/local$i.wav" bs=1M status=none &
		dds+=($!)
	done
	wait "${dds[@]}"
	dd=$(calc "($(children_cpu) - $c0) / ($n * $(stat -c %s "$f") / $GiB)")
	rm -f "$work"/local*.wav
}
scenario_memory() {
	echo "bench: memory and CPU (4 files at once, 1 GiB and 4 GiB each)"
	memory "$GiB"
	hwm1=$hwm cpu1=$cpu
	memory $((4 * GiB))
	hwm4=$hwm cpu4=$cpu
	if [ -n "${large_cpu:-}" ]; then # the large scenario's own row
		dd_cpu 1 "$large"
		dd2=$dd
	fi
	head -c "$GiB" "$large" >"$data/mem.wav"
	dd_cpu 4 "$data/mem.wav"
	dd1=$dd
	cat "$large" "$large" >"$data/mem.wav"
	dd_cpu 4 "$data/mem.wav"
	dd4=$dd
	rm -f "$data/mem.wav"
	grow=$(calc "$hwm4 / $hwm1")
	if [ -n "${large_hwm:-}" ]; then
		row "peak RSS, 2 GiB file" "$((large_hwm / 1024)) MiB" "" "" \
			"<= 32" "$(verdict "$large_hwm" '<=' $((32 * 1024)))"
	fi
	row "peak RSS, 4 x 1 GiB at once" "$((hwm1 / 1024)) MiB" "" "" "<= 32" \
		"$(verdict "$hwm1" '<=' $((32 * 1024)))"
	row "peak RSS, 4 x 4 GiB at once" "$((hwm4 / 1024)) MiB" "against 4 x 1 GiB" \
		"$(fmt %.2f "$grow")" "<= 1.10" "$(verdict "$grow" '<=' 1.10)"
	for c in ${large_cpu:+"2 GiB file:$large_cpu:dd $dd2"} \
		"4 x 1 GiB:$cpu1:4 x dd $dd1" "4 x 4 GiB:$cpu4:4 x dd $dd4"; do
		IFS=: read -r what v peer <<<"$c"
		row "CPU per GiB, $what" "$(fmt '%.2f s' "$v")" \
			"${peer% *} to a file $(fmt '%.2f s' "${peer##* }")" \
			"$(fmt %.2f "$v / ${peer##* }")" "<= 1.0" "$(verdict "$v" '<=' 1.0)"
	done
}

# --- Scale ------------------------------------------------------------------

scale_rows=()
scale_row() { scale_rows+=("$(printf '%-28s %10s %14s' "$@")"); }

copy_size() { cp "$data/size.wav" "$mnt/" && upload_wait "$mnt"; }
copy_count() { # N: the first N small files
	# shellcheck disable=SC2046,SC2012 # memo1.wav...: plain names
	cp $(ls -d "$data"/many/* | head -n "$1") "$mnt/count$1/" &&
		upload_wait "$mnt"
}

# One run per point, stored: how time grows with each dimension alone.
scenario_scale() {
	local mib count n
	echo "bench: scale (one run each, stored)"
	mount_tusfs "$store_url" "$mnt"
	for mib in 64 512 2048; do
		head -c $((mib * MiB)) "$large" >"$data/size.wav"
		t=()
		timed t copy_size
		scale_row "file size $mib MiB" "$(secs "${t[0]}")" \
			"$(fmt '%.2f s/GiB' "${t[0]} * 1024 / $mib")"
		rm "$mnt/size.wav" "$data/size.wav"
		clear_store
	done
	for count in 100 300 1000; do
		mkdir -p "$mnt/count$count"
		t=()
		timed t copy_count "$count"
		scale_row "file count $count" "$(secs "${t[0]}")" \
			"$(fmt '%.2f ms/file' "${t[0]} * 1000 / $count")"
		rm -rf "$mnt/count$count"
		clear_store
	done
	unmount "$mnt"
	for n in 1 2 4 8; do
		mount_tusfs "$store_url" "$mnt" -o "max_uploads=$n"
		t=()
		timed t copy_many
		scale_row "max_uploads=$n, 1000 files" "$(secs "${t[0]}")" \
			"$(fmt '%.2f ms/file' "${t[0]}")"
		rm -rf "$mnt/many"
		unmount "$mnt"
		clear_store
	done
}

# ls -l of a folder of N files, after the kernel's 1 s attribute and entry
# caches ran out (both filesystems keep them that long).
list_dir() { sleep 1.1 && ls -l "$1" >/dev/null; }
ls_tusfs() { list_dir "$mnt/many"; }
ls_passthrough() { list_dir "$pll/many"; }
ls_round() {
	timed a ls_tusfs
	timed b ls_passthrough
}
# make_files DIR N: N empty files (tusfs keeps an empty file local).
make_files() {
	mkdir -p "$1"
	(cd "$1" && seq "$2" | sed 's/^/rec-/; s/$/.wav/' | xargs touch)
}
scenario_ls() {
	echo "bench: ls -l of a folder of 10 000 files"
	mount_tusfs "$discard_url" "$mnt"
	mount_passthrough
	make_files "$mnt/many" 10000
	make_files "$pll/many" 10000
	a=() b=()
	rounds ls_round
	ta=$(median "${a[@]}") tb=$(median "${b[@]}")
	ratio=$(calc "($ta - 1.1) / ($tb - 1.1)")
	row "ls -l of 10 000 files" "$(secs "$ta - 1.1")" \
		"passthrough_ll $(secs "$tb - 1.1")" "$(fmt %.2f "$ratio")" \
		"<= 2" "$(verdict "$ratio" '<=' 2)"
	# The scale point, tusfs alone: passthrough_ll holds a descriptor per
	# inode it has seen, and 100 000 pass the usual limit on open files.
	make_files "$mnt/many" 100000
	a=()
	timed a ls_tusfs
	row "  100 000 files" "$(secs "${a[0]} - 1.1")" \
		"10 x tusfs's 10 000 $(secs "10 * ($ta - 1.1)")" \
		"$(fmt %.2f "(${a[0]} - 1.1) / (10 * ($ta - 1.1))")" "" ""
	rm -rf "$mnt/many" "$pll/many"
	fusermount3 -u "$pll"
	unmount "$mnt"
}

round=1
for s in $scenarios; do
	"scenario_$s"
done

echo
printf '%-34s %12s %26s %6s %7s\n' scenario tusfs peer ratio target
printf '%s\n' "${rows[@]}"
if [ "${#scale_rows[@]}" -gt 0 ]; then
	echo
	printf '%-28s %10s %14s\n' scale time cost
	printf '%s\n' "${scale_rows[@]}"
fi
