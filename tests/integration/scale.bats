#!/usr/bin/env bats
# Folders at scale: a listing of thousands of entries, read by the kernel
# in several batches, shows each entry once with the attributes stat
# gives, while files come and go. Apart from namespace.bats because
# memcheck (scripts/valgrind.sh runs namespace.bats) takes minutes over
# it; the sanitized daemon of the main run covers it.

load helpers/common

setup() {
	common_setup
	backend_start
}

teardown() {
	common_teardown
}

@test "a listing of a large folder shows each entry once, with the attributes stat gives, while files come and go" {
	tusfs_mount "transcripts=off"
	mkdir "$MNT/big"
	(cd "$MNT/big" && seq 4000 | sed 's/^/rec-/; s/$/.wav/' | xargs touch)
	echo hello >"$MNT/big/said.txt"
	"$TUSFS_BIN" wait "$MNT" --timeout 30
	# Readdirplus gives every entry's attributes with the listing; what
	# ls -l shows must be what stat says, sidecars' sizes included (a
	# status's time is the moment it is read, so only files' times count).
	ls -ln --time-style=+%s "$MNT/big" |
		awk 'NR > 1 { if ($7 ~ /\.status$/) $6 = "-"; print $5, $6, $7 }' | sort >"$T/ls"
	(cd "$MNT/big" && stat -c '%s %Y %n' -- * |
		awk '{ if ($3 ~ /\.status$/) $2 = "-"; print }' | sort) >"$T/stat"
	diff "$T/ls" "$T/stat"
	[ "$(wc -l <"$T/ls")" -eq 8002 ]
	grep -q "^$(wc -c <"$MNT/big/said.txt.status") - said.txt.status$" "$T/ls"
	# The kernel reads a listing in batches of up to 1 MiB (about 6 000
	# entries), so 8 000 take two. A file moved to another folder after
	# the first batch is not listed in the old one (newest first: rec-1
	# comes last), and every entry that stays is listed once.
	mkdir "$MNT/away"
	python3 - "$MNT/big" "$MNT/away" <<-'PY'
		import os, sys
		it = os.scandir(sys.argv[1])
		names = [next(it).name]
		os.rename(os.path.join(sys.argv[1], "rec-1.wav"),
		          os.path.join(sys.argv[2], "rec-1.wav"))
		names += [e.name for e in it]
		assert "rec-1.wav" not in names and "rec-1.wav.status" not in names, names[-4:]
		assert len(names) == len(set(names)) == 8000, len(names)
	PY
	# Entries added and removed while a listing is read across many
	# requests: every entry that stays is listed exactly once.
	(cd "$MNT/big" && for i in $(seq 4001 4300); do : >"rec-$i.wav"; rm -f "rec-$((i - 4000)).wav"; done) &
	local churn=$!
	ls -f "$MNT/big" >"$T/during"
	wait "$churn"
	[ -z "$(sort "$T/during" | uniq -d)" ]
	for i in $(seq 301 4000); do echo "rec-$i.wav"; echo "rec-$i.wav.status"; done | sort >"$T/stayed"
	[ -z "$(comm -23 "$T/stayed" <(sort "$T/during"))" ]
}
