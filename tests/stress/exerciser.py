#!/usr/bin/python3
"""Model-based exerciser for a tusfs mount (tests/stress/exerciser.py).

Runs a random sequence of file operations, reproducible from --seed, in
lockstep on the mount (MOUNT/s<seed>/) and on a plain directory, the model
(MODEL/s<seed>/), and compares every result: return values, errno, bytes
read, sizes and directory listings. Where tusfs differs from a plain
directory by design (docs/SEMANTICS.md) the model knows the rule:

  - NAME.status shows beside every regular file (transcripts=off; with
    --transcripts the .txt/.srt/.vtt/.json names are reserved too): it is
    listed, opening it for writing gives EACCES, unlinking or renaming it
    EPERM, creating, mkdir-ing or renaming onto it EEXIST, and so is
    creating (or renaming a file to) a name whose sidecar names a real
    entry already has;
  - a file whose upload is complete, opened for writing without O_TRUNC,
    gives a handle whose writes fail with EPERM; truncating a complete
    upload to another size than its own gives EPERM, to 0 starts a new
    upload. Whether the upload is complete is read from user.tusfs.state
    at the only moments it is stable: right after such an open (an open
    writer keeps a file from completing), or after waiting for a closed
    file to settle;
  - fstat of a file unlinked while open fails with ESTALE (known limit),
    or succeeds while the kernel still caches its attributes;
  - temporary names (-o temp_names, the default patterns) are held and
    never uploaded; zero-byte files are never uploaded.

Every operation runs under a watchdog: one that takes longer than
--timeout seconds is reported as a HANG with the seed and the op trace,
--on-hang CMD is run (e.g. a gdb backtrace of the daemon), and the process
exits 3. At the end every handle is closed, `tusfs wait` must return 0,
and every final file (not a temporary name, not empty) must be uploaded:
its upload (user.tusfs.url, looked up with tests/backend/inspect.js
--json in --store) must be complete and byte-equal to the model. With
--check-fsync, every fsync that returns 0 on an uploading file is checked
against the server's copy at once (the durability contract).

Exit status: 0 pass, 1 divergence, 3 hang, 2 usage or setup error.
The trace uses fsx's notation with hex offsets, one op per line.
Standard library only; runs with Debian's /usr/bin/python3.
"""

import argparse
import errno
import fnmatch
import hashlib
import json
import mmap
import os
import random
import shutil
import subprocess
import sys
import threading
import time

DEFAULT_TEMP = (".*.??????/*.part/*.partial/.goutputstream-*/*.crdownload/"
                "*.tmp/*~/.#*/._*")
SUFFIXES_ALL = [".status", ".txt", ".srt", ".vtt", ".json"]
FINAL_NAMES = ["a.wav", "b.wav", "c.mp3", "n.bin"]
DIR_NAMES = ["d0", "d1", "e"]
MiB = 1 << 20


class Divergence(Exception):
    pass


def res(fn, *args):
    """('ok', value) or ('err', errno) of fn(*args)."""
    try:
        return ("ok", fn(*args))
    except OSError as e:
        return ("err", e.errno)


def differs_at(a, b):
    """The first offset at which two byte strings differ."""
    return next((i for i in range(min(len(a), len(b))) if a[i] != b[i]),
                min(len(a), len(b)))


def ename(r):
    if r[0] == "err":
        return errno.errorcode.get(r[1], str(r[1]))
    v = r[1]
    if isinstance(v, (bytes, bytearray)):
        return "%d bytes" % len(v)
    return "ok %r" % (v,) if v is not None else "ok"


class Watchdog(threading.Thread):
    def __init__(self, ex, timeout):
        super().__init__(daemon=True)
        self.ex, self.timeout = ex, timeout
        self.lock = threading.Lock()
        self.cur = None  # (desc, start)

    def begin(self, desc):
        with self.lock:
            self.cur = (desc, time.monotonic())

    def end(self):
        with self.lock:
            self.cur = None

    def run(self):
        while True:
            time.sleep(0.25)
            with self.lock:
                cur = self.cur
            if cur and time.monotonic() - cur[1] > self.timeout:
                self.ex.report_hang(cur[0], time.monotonic() - cur[1])
                os._exit(3)


class MFile:
    """A file of the model, followed through renames and unlinks."""
    _next = 0

    def __init__(self, path):
        MFile._next += 1
        self.id = MFile._next
        self.path = path        # relative to the seed dir, None if unlinked
        self.writers = 0
        self.blank = True       # never held a byte: no upload ever began


class Handle:
    _next = 0

    def __init__(self, f, tfd, mfd, writable, immutable, readable):
        Handle._next += 1
        self.id = Handle._next
        self.f, self.tfd, self.mfd = f, tfd, mfd  # tusfs, model
        self.writable = writable    # counts as a writer in tusfs
        self.immutable = immutable  # opened for write on a complete upload
        self.readable = readable
        self.map = None             # op_mapread's shared mapping of tfd

    def unmap(self):
        if self.map is not None:
            self.map.close()
            self.map = None


class Exerciser:
    def __init__(self, a):
        self.a = a
        self.rng = random.Random(a.seed)
        self.sub = "s%d" % a.seed
        self.mroot = os.path.join(a.mount, self.sub)
        self.droot = os.path.join(a.model, self.sub)
        self.suffixes = SUFFIXES_ALL if a.transcripts else SUFFIXES_ALL[:1]
        self.temp_pats = [p for p in a.temp_names.split("/") if p]
        self.files = {}     # path -> MFile
        self.dirs = {""}    # relative dir paths
        self.handles = []
        self.trace = []
        self.opno = 0
        self.counts = {}
        self.wd = Watchdog(self, a.timeout)

    # ----- helpers -----------------------------------------------------
    def log(self, line):
        self.trace.append("%d %s" % (self.opno, line))

    def mp(self, rel):
        return os.path.join(self.mroot, rel) if rel else self.mroot

    def dp(self, rel):
        return os.path.join(self.droot, rel) if rel else self.droot

    def is_temp(self, name):
        return any(fnmatch.fnmatchcase(name, p) for p in self.temp_pats)

    def guarded(self, desc, fn, *args):
        self.wd.begin(desc)
        try:
            return res(fn, *args)
        finally:
            self.wd.end()

    def fail(self, msg):
        raise Divergence(msg)

    def expect(self, what, got, want):
        if got != want:
            self.fail("%s: tusfs gave %s, the model %s" %
                      (what, ename(got), ename(want)))

    def state(self, rel_or_fd):
        """user.tusfs.state of a path (or an fd), or None."""
        try:
            if isinstance(rel_or_fd, int):
                v = os.getxattr(rel_or_fd, "user.tusfs.state")
            else:
                v = os.getxattr(self.mp(rel_or_fd), "user.tusfs.state")
            return v.decode()
        except OSError:
            return None

    def settle(self, rel):
        """Waits until a closed file's upload state stops moving."""
        self.wd.begin("settle %s" % rel)
        try:
            while True:
                st = self.state(rel)
                if st in ("uploaded", "empty", "failed", "held", "paused",
                          None):
                    return st
                time.sleep(0.05)
        finally:
            self.wd.end()

    def sidecar_owner(self, d, name):
        """The regular file in dir d whose sidecar name is `name`."""
        for s in self.suffixes:
            if name.endswith(s) and len(name) > len(s):
                base = os.path.join(d, name[:-len(s)]) if d else \
                    name[:-len(s)]
                if base in self.files:
                    return base
        return None

    def entry_exists(self, rel):
        return rel in self.files or rel in self.dirs

    def sidecar_taken(self, d, name, except_rel=None):
        for s in self.suffixes:
            full = (os.path.join(d, name) if d else name) + s
            if self.entry_exists(full) and full != except_rel:
                return True
        return False

    def children(self, d):
        pre = d + "/" if d else ""
        out = set()
        for p in list(self.files) + list(self.dirs):
            if p and p.startswith(pre) and "/" not in p[len(pre):]:
                out.add(p)
        return out

    def join(self, d, name):
        return os.path.join(d, name) if d else name

    def pick(self, seq):
        seq = sorted(seq) if isinstance(seq, (set, dict)) else list(seq)
        return self.rng.choice(seq) if seq else None

    def rand_name(self):
        r = self.rng.random()
        base = self.rng.choice(FINAL_NAMES[:self.a.files])
        if r < 0.1:
            return "." + base + "." + "".join(
                self.rng.choice("AbCdXy0129") for _ in range(6))
        if r < 0.17:
            return base + ".part"
        return base

    def data(self, n):
        return self.rng.randbytes(n)

    def count(self, op):
        self.counts[op] = self.counts.get(op, 0) + 1

    # ----- comparisons ---------------------------------------------------
    def check_nlink(self, p, ms, ds):
        """A directory's st_nlink: 2 plus its subdirectories, exactly."""
        if self.a.check_nlink and ms.st_nlink != ds.st_nlink:
            self.fail("stat %s: st_nlink %d, model %d" %
                      (p or ".", ms.st_nlink, ds.st_nlink))

    def check_listing(self, d):
        # The directory itself too (the seed's root is nobody's child).
        ms = self.guarded("stat %s" % d, os.stat, self.mp(d))
        ds = res(os.stat, self.dp(d))
        if ms[0] != ds[0]:
            self.expect("stat %s" % (d or "."), ms, ds)
        if ms[0] == "ok":
            self.check_nlink(d, ms[1], ds[1])
        m = self.guarded("readdir %s" % d, os.listdir, self.mp(d))
        want_real = {os.path.basename(p) for p in self.children(d)}
        if m[0] == "err":
            self.fail("readdir %s: %s" % (d or ".", ename(m)))
        got = set(m[1])
        extra = got - want_real
        side = set()
        for p in self.children(d):
            if p in self.files:
                for s in self.suffixes:
                    side.add(os.path.basename(p) + s)
        missing = want_real - got
        unknown = extra - side
        # NAME.status must show for every regular file (unless a real
        # entry of that name hides it, or it would pass 255 bytes).
        nostatus = {os.path.basename(p) + ".status"
                    for p in self.children(d) if p in self.files
                    and len(os.path.basename(p)) + 7 <= 255} - got
        if missing or unknown or nostatus:
            self.fail("listing of %s: missing %s, unexpected %s, no "
                      "sidecar %s" % (d or ".", sorted(missing),
                                       sorted(unknown), sorted(nostatus)))
        pre = d + "/" if d else ""
        below = sum(1 for p in self.files if p.startswith(pre))
        counted = sum(self.summary(d).values())
        if counted != below:
            self.fail("summary of %s counts %d files, the model has %d" %
                      (d or ".", counted, below))
        for p in self.children(d):
            ms = self.guarded("stat %s" % p, os.stat, self.mp(p))
            ds = res(os.stat, self.dp(p))
            if ms[0] != ds[0]:
                self.expect("stat %s" % p, ms, ds)
            if ms[0] == "ok":
                if (ms[1].st_mode & 0o170000) != (ds[1].st_mode & 0o170000):
                    self.fail("stat %s: type differs" % p)
                if p in self.files and ms[1].st_size != ds[1].st_size:
                    self.fail("stat %s: size 0x%x, model 0x%x" %
                              (p, ms[1].st_size, ds[1].st_size))
                if p in self.dirs:
                    self.check_nlink(p, ms[1], ds[1])
                self.check_namespaces(p)

    def summary(self, d):
        """user.tusfs.summary of a folder as {state: files below it}."""
        m = self.guarded("summary %s" % d, os.getxattr, self.mp(d),
                         "user.tusfs.summary")
        if m[0] == "err":
            self.fail("summary of %s: %s" % (d or ".", ename(m)))
        counts = {}
        for line in m[1].decode().splitlines():
            n, state, _detail = line.split("\t")
            counts[state] = counts.get(state, 0) + int(n)
        return counts

    def check_namespaces(self, p):
        """A mount has the user namespace only: the others answer ENOTSUP
        (so ls -l asks the first entry, not all), and a user name that is
        not tusfs's ENODATA."""
        for name, want in (("system.posix_acl_access", errno.ENOTSUP),
                           ("security.selinux", errno.ENOTSUP),
                           ("user.other", errno.ENODATA)):
            got = res(os.getxattr, self.mp(p), name)
            if got != ("err", want):
                self.expect("getxattr %s %s" % (p, name), got,
                            ("err", want))

    def check_tree(self):
        for d in sorted(self.dirs):
            self.check_listing(d)

    # ----- operations ----------------------------------------------------
    def op_create(self):
        d = self.pick(self.dirs)
        name = self.rand_name()
        rel = self.join(d, name)
        excl = self.rng.random() < 0.3
        flags = os.O_RDWR | os.O_CREAT | (os.O_EXCL if excl else 0)
        if self.rng.random() < 0.5:
            flags |= os.O_TRUNC
        self.log("create %s%s%s" % (rel, " excl" if excl else "",
                                    " trunc" if flags & os.O_TRUNC else ""))
        self.open_common(rel, flags, "create")

    def op_open(self):
        rel = self.pick(self.files)
        if rel is None:
            return self.op_create()
        kind = self.rng.choice(["rdwr", "wronly", "rdonly", "trunc"])
        flags = {"rdwr": os.O_RDWR, "wronly": os.O_WRONLY,
                 "rdonly": os.O_RDONLY,
                 "trunc": os.O_RDWR | os.O_TRUNC}[kind]
        self.log("open %s %s" % (rel, kind))
        self.open_common(rel, flags, "open")

    def open_common(self, rel, flags, what):
        d, name = os.path.split(rel)
        exists = rel in self.files
        acc = flags & os.O_ACCMODE
        writable = acc != os.O_RDONLY
        # Sidecar rules first (a real file of that name cannot exist).
        want = None
        if not exists and rel not in self.dirs and \
                self.sidecar_owner(d, name):
            if flags & os.O_EXCL:
                want = ("err", errno.EEXIST)
            elif name.endswith(".status"):
                # Always shown, so the lookup finds it and this is an
                # open of NAME.status: read-only.
                want = ("err", errno.EACCES) if writable or \
                    flags & os.O_TRUNC else ("ok", "sidecar")
            else:
                # Not shown until transcribed: a create, refused.
                want = ("err", errno.EEXIST)
        elif not exists and rel not in self.dirs and \
                (flags & os.O_CREAT) and self.sidecar_taken(d, name):
            want = ("err", errno.EEXIST)
        m = self.guarded("open %s" % rel, os.open, self.mp(rel), flags,
                         0o644)
        if want is not None:
            if m[0] == "ok":
                os.close(m[1])
                m = ("ok", "sidecar")
            self.expect("%s %s" % (what, rel), m, want)
            return
        dres = res(os.open, self.dp(rel), flags, 0o644)
        if (m[0], m[1] if m[0] == "err" else 0) != \
                (dres[0], dres[1] if dres[0] == "err" else 0):
            for r in (m, dres):
                if r[0] == "ok":
                    os.close(r[1])
            self.expect("%s %s" % (what, rel), m, dres)
        if m[0] == "err":
            return
        f = self.files.get(rel)
        if f is None:
            f = MFile(rel)
            self.files[rel] = f
        immutable = False
        if writable and not flags & os.O_TRUNC and not \
                (what == "create" and not exists):
            # Stable now: an open writer keeps a file from completing,
            # and a complete one stays complete.
            st = self.state(m[1])
            immutable = st == "uploaded"
        h = Handle(f, m[1], dres[1], writable and not immutable,
                   immutable, acc != os.O_WRONLY)
        if h.writable:
            f.writers += 1
        self.handles.append(h)
        self.log("  -> h%d%s" % (h.id, " (complete upload: immutable)"
                                 if immutable else ""))

    def pick_handle(self):
        return self.pick(self.handles) if self.handles else None

    def op_close(self, h=None):
        h = h or self.pick_handle()
        if not h:
            return
        self.log("close h%d" % h.id)
        h.unmap()
        m = self.guarded("close h%d" % h.id, os.close, h.tfd)
        d = res(os.close, h.mfd)
        self.handles.remove(h)
        if h.writable:
            h.f.writers -= 1
        self.expect("close h%d" % h.id, m, d)
        f = h.f
        if h.writable and f.writers == 0 and f.blank and f.path:
            # Nothing to send, so nothing to wait for: empty at once
            # even in a paused folder.
            st = self.settle(f.path)
            if st not in ("empty", "held"):
                self.fail("%s: closed with no byte ever, state %s" %
                          (f.path, st))

    def op_write(self, h=None):
        h = h or self.pick_handle()
        if not h:
            return self.op_create()
        size = os.fstat(h.mfd).st_size
        r = self.rng.random()
        maxsz = self.a.max_size
        if r < 0.35:
            off = size                           # append
        elif r < 0.7:
            off = self.rng.randrange(0, size + 1)  # rewrite, maybe sent
        else:
            off = self.rng.randrange(0, maxsz)   # anywhere: holes
        ln = self.rng.choice([1, 17, 4096, 65536, 262144, 300000,
                              self.rng.randrange(1, 1 << 20)])
        if off >= maxsz:
            off = self.rng.randrange(0, maxsz)
        ln = max(1, min(ln, maxsz - off))
        self.do_write(h, off, ln)

    def do_write(self, h, off, ln):
        size = os.fstat(h.mfd).st_size
        buf = self.data(ln)
        self.log("write h%d 0x%x thru 0x%x\t(0x%x bytes) size 0x%x" %
                 (h.id, off, off + ln - 1, ln, size))
        m = self.guarded("write h%d" % h.id, os.pwrite, h.tfd, buf, off)
        if h.immutable:
            return self.expect("write h%d" % h.id, m,
                               ("err", errno.EPERM))
        d = res(os.pwrite, h.mfd, buf, off)
        self.expect("write h%d" % h.id, m, d)
        h.f.blank = False

    def op_read(self, h=None):
        h = h or self.pick_handle()
        if not h:
            return self.op_pathread()
        size = os.fstat(h.mfd).st_size
        off = self.rng.randrange(0, size + 2)
        ln = self.rng.choice([1, 4096, 131072, 1 << 20])
        self.log("read h%d 0x%x thru 0x%x" % (h.id, off, off + ln - 1))
        m = self.guarded("read h%d" % h.id, os.pread, h.tfd, ln, off)
        d = res(os.pread, h.mfd, ln, off)
        self.expect("read h%d" % h.id, m, d)
        if m[0] == "ok" and m[1] != d[1]:
            self.fail("read h%d: bytes differ at 0x%x" %
                      (h.id, off + differs_at(m[1], d[1])))
        self.check_fstat(h, size)

    def check_fstat(self, h, size):
        """fstat of h in the mount gives the model's size, or ESTALE on a
        file unlinked while open (the known limit: libfuse resolves it by
        path, which is gone, unless the kernel still has the attributes
        cached)."""
        m = self.guarded("fstat h%d" % h.id, os.fstat, h.tfd)
        if h.f.path is None and m[0] == "err":
            return self.expect("fstat h%d (unlinked)" % h.id, m,
                               ("err", errno.ESTALE))
        if m[0] == "err" or m[1].st_size != size:
            self.fail("fstat h%d: %s, model size 0x%x" %
                      (h.id, ename(m) if m[0] == "err" else
                       "size 0x%x" % m[1].st_size, size))

    def op_mapread(self):
        """Reads a readable handle through a shared mapping that stays
        until the handle closes, so the writes of other handles since the
        last look must show in it (write-only handles write past the page
        cache)."""
        hs = [h for h in self.handles if h.readable and h.f.path]
        if not hs:
            return self.op_read()
        h = self.pick(hs)
        size = os.fstat(h.mfd).st_size
        self.check_fstat(h, size)
        if size == 0:
            return
        if h.map is None or len(h.map) < size:
            self.log("map h%d 0x%x bytes" % (h.id, size))
            h.unmap()
            m = self.guarded("mmap h%d" % h.id, mmap.mmap, h.tfd, size,
                             mmap.MAP_SHARED, mmap.PROT_READ)
            if m[0] == "err":
                return self.fail("mmap h%d: %s" % (h.id, ename(m)))
            h.map = m[1]
        self.log("read h%d through its mapping, 0x%x bytes" % (h.id, size))
        # Only pages below the end: one past it would be SIGBUS.
        m = self.guarded("mapped read h%d" % h.id, lambda: h.map[:size])
        if m[0] == "err":
            return self.fail("mapped read h%d: %s" % (h.id, ename(m)))
        want = os.pread(h.mfd, size, 0)
        if m[1] != want:
            self.fail("mapped read h%d: bytes differ at 0x%x" %
                      (h.id, differs_at(m[1], want)))

    def op_pathread(self):
        rel = self.pick(self.files)
        if not rel:
            return
        self.log("read %s whole" % rel)
        m = self.guarded("read %s" % rel, lambda: open(self.mp(rel),
                                                       "rb").read())
        d = res(lambda: open(self.dp(rel), "rb").read())
        self.expect("read %s" % rel, m, d)
        if m[0] == "ok" and m[1] != d[1]:
            self.fail("read %s: bytes differ" % rel)

    def new_size(self, size):
        r = self.rng.random()
        if r < 0.1:
            return 0
        if r < 0.55:
            return self.rng.randrange(0, size + 1)
        if r < 0.6:
            return size
        return self.rng.randrange(size, max(size, self.a.max_size) + 1)

    def trunc_rule(self, f, size, new):
        """EPERM when a complete upload would change size. Needs the
        file's state stable: with a writer open it cannot be complete."""
        if f.writers > 0:
            return None
        st = self.settle(f.path)
        if st == "uploaded" and new != size:
            return None if new == 0 else ("err", errno.EPERM)
        return None

    def op_ftruncate(self, h=None):
        h = h or self.pick_handle()
        if not h or not h.writable and not h.immutable:
            return
        if h.f.path is None and h.f.writers == 0:
            return  # unlinked, no writer: its state cannot be read
        self.do_ftruncate(h, self.new_size(os.fstat(h.mfd).st_size))

    def do_ftruncate(self, h, new):
        size = os.fstat(h.mfd).st_size
        self.log("trunc h%d from 0x%x to 0x%x" % (h.id, size, new))
        want = self.trunc_rule(h.f, size, new)
        m = self.guarded("ftruncate h%d" % h.id, os.ftruncate, h.tfd, new)
        if want:
            return self.expect("ftruncate h%d" % h.id, m, want)
        d = res(os.ftruncate, h.mfd, new)
        self.expect("ftruncate h%d" % h.id, m, d)
        h.f.blank = h.f.blank and new == 0

    def op_truncate(self):
        rel = self.pick(self.files)
        if not rel:
            return
        f = self.files[rel]
        size = os.stat(self.dp(rel)).st_size
        new = self.new_size(size)
        self.log("trunc %s from 0x%x to 0x%x" % (rel, size, new))
        want = self.trunc_rule(f, size, new)
        m = self.guarded("truncate %s" % rel, os.truncate, self.mp(rel), new)
        if want:
            return self.expect("truncate %s" % rel, m, want)
        d = res(os.truncate, self.dp(rel), new)
        self.expect("truncate %s" % rel, m, d)
        f.blank = f.blank and new == 0

    def op_fsync(self, h=None):
        h = h or self.pick_handle()
        if not h:
            return
        self.log("fsync h%d" % h.id)
        m = self.guarded("fsync h%d" % h.id, os.fsync, h.tfd)
        self.expect("fsync h%d" % h.id, m, ("ok", None))
        if self.a.check_fsync and self.a.store and h.f.path and \
                not self.is_temp(os.path.basename(h.f.path)):
            self.check_confirmed(h)

    def paused(self, fd):
        try:
            return os.getxattr(fd, "user.tusfs.paused") == b"1"
        except OSError:
            return False

    def check_confirmed(self, h):
        """fsync returned 0: the server holds every byte written (unless
        the file is paused: then fsync syncs the spool only)."""
        want = open(self.dp(h.f.path), "rb").read()
        if not want or self.paused(h.tfd):
            return
        try:
            url = os.getxattr(h.tfd, "user.tusfs.url").decode()
        except OSError as e:
            self.fail("fsync h%d: no upload URL after fsync (%s)" %
                      (h.id, errno.errorcode.get(e.errno)))
        sid = url.rstrip("/").rsplit("/", 1)[-1]
        try:
            got = open(os.path.join(self.a.store, sid), "rb").read()
        except OSError as e:
            self.fail("fsync h%d: upload %s not in the store: %s" %
                      (h.id, sid, e))
        if got[:len(want)] != want or len(got) < len(want):
            self.fail("fsync h%d returned 0 but the server holds 0x%x "
                      "bytes of 0x%x%s" %
                      (h.id, len(got), len(want),
                       "" if len(got) < len(want) else " (they differ)"))

    def op_rename(self):
        src = self.pick(list(self.files) + [p for p in self.dirs if p])
        if not src:
            return
        d, name = os.path.split(src)
        r = self.rng.random()
        if src in self.files and self.is_temp(name) and r < 0.6:
            # back to a final name
            base = name[:-5] if name.endswith(".part") else \
                name[1:-7] if name.startswith(".") else name
            dst = self.join(d, base or "x.wav")
        elif src in self.files and r < 0.4:
            dst = self.join(d, self.rng.choice(
                ["." + name + ".Ab12Cd", name + ".part"]))
        elif r < 0.5 and src in self.files:
            dst = self.join(d, self.pick(self.files).split("/")[-1] + ".status")
        else:
            dst = self.join(self.pick(self.dirs),
                            self.rand_name() if src in self.files else
                            self.rng.choice(DIR_NAMES))
        self.log("rename %s to %s" % (src, dst))
        dd, dname = os.path.split(dst)
        is_file = src in self.files
        want = None
        if dd not in self.dirs:
            want = None  # ENOENT from the model
        elif self.sidecar_owner(dd, dname) not in (None, src):
            want = ("err", errno.EEXIST)
        elif is_file and self.sidecar_taken(dd, dname, except_rel=src):
            want = ("err", errno.EEXIST)
        m = self.guarded("rename %s" % src, os.rename, self.mp(src),
                         self.mp(dst))
        if want:
            return self.expect("rename %s to %s" % (src, dst), m, want)
        dres = res(os.rename, self.dp(src), self.dp(dst))
        self.expect("rename %s to %s" % (src, dst), m, dres)
        if dres[0] == "ok" and src != dst:
            self.moved(src, dst)

    def moved(self, src, dst):
        if src in self.files:
            victim = self.files.pop(dst, None)
            if victim:
                victim.path = None
            f = self.files.pop(src)
            f.path = dst
            self.files[dst] = f
            return
        # a directory (over an empty one, maybe)
        self.dirs.discard(dst)
        pre = src + "/"
        for p in sorted(self.dirs):
            if p == src or p.startswith(pre):
                self.dirs.discard(p)
                self.dirs.add(dst + p[len(src):])
        for p in list(self.files):
            if p.startswith(pre):
                f = self.files.pop(p)
                f.path = dst + p[len(src):]
                self.files[f.path] = f

    def op_unlink(self):
        rel = self.pick(self.files)
        if not rel:
            return
        self.log("unlink %s" % rel)
        m = self.guarded("unlink %s" % rel, os.unlink, self.mp(rel))
        d = res(os.unlink, self.dp(rel))
        self.expect("unlink %s" % rel, m, d)
        if d[0] == "ok":
            self.files.pop(rel).path = None

    def op_mkdir(self):
        parent = self.pick([p for p in self.dirs if p.count("/") < 2])
        rel = self.join(parent, self.rng.choice(DIR_NAMES))
        self.log("mkdir %s" % rel)
        pd, name = os.path.split(rel)
        m = self.guarded("mkdir %s" % rel, os.mkdir, self.mp(rel))
        if self.sidecar_owner(pd, name) and not self.entry_exists(rel):
            return self.expect("mkdir %s" % rel, m, ("err", errno.EEXIST))
        d = res(os.mkdir, self.dp(rel))
        self.expect("mkdir %s" % rel, m, d)
        if d[0] == "ok":
            self.dirs.add(rel)

    def op_rmdir(self):
        rel = self.pick([p for p in self.dirs if p])
        if not rel:
            return
        self.log("rmdir %s" % rel)
        m = self.guarded("rmdir %s" % rel, os.rmdir, self.mp(rel))
        d = res(os.rmdir, self.dp(rel))
        self.expect("rmdir %s" % rel, m, d)
        if d[0] == "ok":
            self.dirs.discard(rel)

    def op_sidecar(self):
        """What a sidecar refuses: write, truncate, unlink, rename."""
        rel = self.pick(self.files)
        if not rel:
            return
        sc = rel + ".status"
        if self.entry_exists(sc):
            return
        kind = self.rng.choice(["open-w", "truncate", "unlink", "rename",
                                "rmdir", "read"])
        self.log("sidecar %s %s" % (kind, sc))
        p = self.mp(sc)
        if kind == "open-w":
            m = self.guarded("open %s" % sc, os.open, p, os.O_WRONLY)
            want = ("err", errno.EACCES)
        elif kind == "truncate":
            m = self.guarded("truncate %s" % sc, os.truncate, p, 0)
            want = ("err", errno.EACCES)
        elif kind == "unlink":
            m = self.guarded("unlink %s" % sc, os.unlink, p)
            want = ("err", errno.EPERM)
        elif kind == "rename":
            m = self.guarded("rename %s" % sc, os.rename, p,
                             self.mp(rel + ".moved"))
            want = ("err", errno.EPERM)
        elif kind == "rmdir":
            m = self.guarded("rmdir %s" % sc, os.rmdir, p)
            want = ("err", errno.ENOTDIR)
        else:
            m = self.guarded("read %s" % sc,
                             lambda: json.loads(open(p, "rb").read()))
            if m[0] == "ok":
                m = ("ok", None)
            want = ("ok", None)
        if m[0] == "ok" and kind == "open-w":
            os.close(m[1])
        self.expect("%s %s" % (kind, sc), m, want)

    def op_pause(self):
        """`tusfs pause` or `resume` of a file or a folder (and all below
        it), through user.tusfs.paused. A paused file sends nothing and
        its fsync returns once spooled; the final check resumes all."""
        rel = self.pick(list(self.files) + list(self.dirs))
        val = b"1" if self.rng.random() < 0.6 else b"0"
        what = "%s %s" % ("pause" if val == b"1" else "resume", rel or ".")
        self.log(what)
        m = self.guarded(what, os.setxattr, self.mp(rel),
                         "user.tusfs.paused", val)
        self.expect(what, m, ("ok", None))

    def op_list(self):
        d = self.pick(self.dirs)
        self.log("ls %s" % (d or "."))
        self.check_listing(d)

    def crash_remount(self):
        """kill -9 the daemon and mount again: the same tree, the same
        bytes (every write that returned was spooled). Namespace changes
        (create, rename, unlink, mkdir, rmdir) are journaled in the
        background within milliseconds (docs/ARCHITECTURE.md,
        Persistence; there is no fsyncdir), so a kill right after an op
        may lose the last of them: the kill waits --remount-settle
        seconds first, and the tree then must be the model's."""
        if not self.a.remount_cmd:
            raise SystemExit("exerciser: --remount-at needs --remount-cmd")
        self.log("settle %.1f s, kill -9 and remount" % self.a.remount_settle)
        time.sleep(self.a.remount_settle)
        for h in self.handles:
            h.unmap()
        self.wd.begin("remount")
        r = subprocess.run(self.a.remount_cmd, shell=True)
        self.wd.end()
        if r.returncode != 0:
            self.fail("remount failed (exit %d)" % r.returncode)
        for h in self.handles:
            for fd in (h.tfd, h.mfd):
                try:
                    os.close(fd)
                except OSError:
                    pass
            h.f.writers = 0
        self.handles = []
        self.check_tree()
        for rel in sorted(self.files):
            m = self.guarded("read %s" % rel,
                             lambda: open(self.mp(rel), "rb").read())
            d = res(lambda: open(self.dp(rel), "rb").read())
            self.expect("read %s after the remount" % rel, m, d)
            if m[1] != d[1]:
                self.fail("read %s after the remount: bytes differ" % rel)

    # ----- fixed scenarios (regressions) ---------------------------------
    def scenario_fsync_after_shrink(self):
        """Issue 17's hang, reduced: an fsync raised sync_target, a
        truncation took the file below it, and a write that crossed no
        chunk boundary grew it again: the next fsync (asking for less
        than sync_target) kicked nobody and waited forever."""
        self.log("create a.wav trunc")
        self.open_common("a.wav", os.O_RDWR | os.O_CREAT | os.O_TRUNC,
                         "create")
        h = self.handles[-1]
        steps = [lambda: self.do_write(h, 0, 0x10000),
                 lambda: self.op_fsync(h),
                 lambda: self.do_ftruncate(h, 0x9d41),
                 lambda: self.op_fsync(h),
                 lambda: self.do_write(h, 0x9d41, 0x11),
                 lambda: self.op_fsync(h)]
        for i, step in enumerate(steps, 1):
            self.opno = i
            step()

    def scenario_fsync_after_empty(self):
        """A file closed empty (state empty), reopened without O_TRUNC and
        written: its fsync must wait for the server, not return at once
        because the state still says empty."""
        self.a.check_fsync = True
        self.log("create a.wav trunc")
        self.open_common("a.wav", os.O_RDWR | os.O_CREAT | os.O_TRUNC,
                         "create")
        self.opno = 1
        self.op_close(self.handles[-1])
        self.opno = 2
        self.log("settle a.wav: %s" % self.settle("a.wav"))
        self.log("open a.wav wronly")
        self.open_common("a.wav", os.O_WRONLY, "open")
        h = self.handles[-1]
        self.opno = 3
        self.do_write(h, 0, 1)
        self.opno = 4
        self.op_fsync(h)

    SCENARIOS = {"fsync-after-shrink": "scenario_fsync_after_shrink",
                 "fsync-after-empty": "scenario_fsync_after_empty"}

    # ----- driving -------------------------------------------------------
    def choose(self):
        if self.a.profile == "single":
            ops = [(self.op_write, 45), (self.op_ftruncate, 15),
                   (self.op_read, 25)]
        else:
            ops = [(self.op_create, 6), (self.op_open, 6),
                   (self.op_close, 8), (self.op_write, 25),
                   (self.op_read, 10), (self.op_ftruncate, 6),
                   (self.op_truncate, 2), (self.op_fsync, 5),
                   (self.op_rename, 7), (self.op_unlink, 3),
                   (self.op_mkdir, 2), (self.op_rmdir, 2),
                   (self.op_sidecar, 2), (self.op_list, 3),
                   (self.op_pathread, 2)]
            # Off by default, so the seeds of earlier findings still
            # replay the same ops.
            if self.a.pause:
                ops.append((self.op_pause, 3))
            if self.a.mmap:
                ops.append((self.op_mapread, 4))
        total = sum(w for _, w in ops)
        x = self.rng.randrange(total)
        for fn, w in ops:
            if x < w:
                return fn
            x -= w

    def setup(self):
        for root in (self.mroot, self.droot):
            if os.path.lexists(root):
                raise SystemExit("exerciser: %s exists; use a fresh "
                                 "mount/model" % root)
        os.makedirs(self.droot)
        r = self.guarded("mkdir %s" % self.sub, os.mkdir, self.mroot)
        if r[0] == "err":
            raise SystemExit("exerciser: mkdir %s: %s" %
                             (self.mroot, ename(r)))

    def run(self):
        self.wd.start()
        self.setup()
        self.log("seed %d ops %d profile %s fsync-every %s" %
                 (self.a.seed, self.a.ops, self.a.profile,
                  self.a.fsync_every))
        if self.a.scenario:
            getattr(self, self.SCENARIOS[self.a.scenario])()
            self.a.ops = 0
        elif self.a.profile == "single":
            self.log("create a.wav")
            self.open_common("a.wav", os.O_RDWR | os.O_CREAT | os.O_TRUNC,
                             "create")
        for i in range(1, self.a.ops + 1):
            self.opno = i
            fn = self.choose()
            self.count(fn.__name__[3:])
            fn()
            if self.a.fsync_every and self.handles and \
                    fn is not self.op_fsync:
                self.op_fsync(self.handles[-1] if self.a.profile ==
                              "single" else None)
            if i in self.a.remount_at:
                self.crash_remount()
            if self.a.check_every and i % self.a.check_every == 0:
                self.check_tree()
        self.opno += 1
        for h in list(self.handles):
            self.op_close(h)
        self.check_tree()
        self.final_check()

    def final_check(self):
        if self.a.pause:
            self.log("resume .")
            m = self.guarded("resume .", os.setxattr, self.mroot,
                             "user.tusfs.paused", b"0")
            self.expect("resume .", m, ("ok", None))
        self.log("tusfs wait")
        self.wd.begin("tusfs wait")
        w = subprocess.run([self.a.tusfs, "wait", self.a.mount, "--timeout",
                            str(self.a.wait_timeout)],
                           capture_output=True, text=True)
        self.wd.end()
        if w.returncode != 0:
            self.fail("tusfs wait exited %d: %s" % (w.returncode,
                                                   w.stderr.strip()))
        # Settled now: the summary must agree with the files one by one.
        each = {}
        for rel in self.files:
            st = self.state(rel)
            each[st] = each.get(st, 0) + 1
        got = self.summary("")
        if got != each:
            self.fail("summary after tusfs wait: %s, the files say %s" %
                      (got, each))
        if not self.a.store:
            return
        self.log("compare with the server")
        out = subprocess.run(["node", self.a.inspect, "--json",
                              self.a.store], capture_output=True, text=True,
                             check=True).stdout
        ups = {u["id"]: u for u in json.loads(out)}
        checked = 0
        for rel, f in sorted(self.files.items()):
            name = os.path.basename(rel)
            st = self.state(rel)
            data = open(self.dp(rel), "rb").read()
            if self.is_temp(name):
                if st not in ("held", "uploaded", "empty"):
                    self.fail("%s: temporary name in state %s" % (rel, st))
                continue
            if not data:
                if st != "empty":
                    self.fail("%s: empty file in state %s" % (rel, st))
                continue
            if st != "uploaded":
                self.fail("%s: state %s after tusfs wait" % (rel, st))
            url = os.getxattr(self.mp(rel), "user.tusfs.url").decode()
            sid = url.rstrip("/").rsplit("/", 1)[-1]
            u = ups.get(sid)
            if not u:
                self.fail("%s: upload %s is not in the store" % (rel, sid))
            sha = hashlib.sha256(data).hexdigest()
            if u["size"] != len(data) or u["offset"] != len(data) or \
                    u["sha256"] != sha:
                self.fail("%s: the server's copy (size %s offset %s) is "
                          "not the model's (0x%x bytes)%s" %
                          (rel, u["size"], u["offset"], len(data),
                           "" if u["sha256"] == sha else ", bytes differ"))
            checked += 1
        self.log("%d files equal on the server" % checked)
        self.checked = checked

    # ----- reports -------------------------------------------------------
    def dump_trace(self, tail=60):
        out = sys.stderr
        if self.a.trace_file:
            with open(self.a.trace_file, "w") as t:
                t.write("\n".join(self.trace) + "\n")
            print("full trace: %s" % self.a.trace_file, file=out)
        print("last %d trace lines:" % min(tail, len(self.trace)), file=out)
        for line in self.trace[-tail:]:
            print("  " + line, file=out)

    def report_hang(self, desc, secs):
        out = sys.stderr
        print("HANG seed %d op %d: %s has not returned after %.0f s" %
              (self.a.seed, self.opno, desc, secs), file=out)
        self.dump_trace()
        if self.a.on_hang:
            subprocess.run(self.a.on_hang, shell=True, timeout=60)
        for rel in sorted(self.files):
            try:
                x = {k: os.getxattr(self.mp(rel), k).decode() for k in
                     ("user.tusfs.state", "user.tusfs.progress")}
            except OSError:
                x = "?"
            print("  xattrs %s: %s" % (rel, x), file=out)
        out.flush()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mount", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--store", help="the backend's --dir (server check)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--ops", type=int, default=500)
    p.add_argument("--files", type=int, default=3, choices=range(1, 5))
    p.add_argument("--profile", choices=["tree", "single"], default="tree",
                   help="single: one file held open, write/trunc/read only")
    p.add_argument("--scenario", choices=sorted(Exerciser.SCENARIOS),
                   help="a fixed op sequence (a regression) instead")
    p.add_argument("--remount-at", type=int, action="append", default=[],
                   help="after op N: --remount-cmd (kill -9, mount again)")
    p.add_argument("--remount-cmd", help="shell command that kills the "
                   "daemon and mounts the same state_dir again")
    p.add_argument("--remount-settle", type=float, default=1.0,
                   help="seconds the journal gets to catch up before the "
                   "kill (namespace changes are journaled in the "
                   "background; 0: kill at once)")
    p.add_argument("--fsync-every", action="store_true")
    p.add_argument("--check-fsync", action="store_true",
                   help="after each fsync the server must hold the bytes")
    p.add_argument("--check-every", type=int, default=50,
                   help="compare the whole tree every N ops (0: never)")
    p.add_argument("--pause", action="store_true",
                   help="also pause and resume files and folders")
    p.add_argument("--mmap", action="store_true",
                   help="also read open files through shared mappings")
    p.add_argument("--check-nlink", action="store_true",
                   help="also compare directories' st_nlink")
    p.add_argument("--max-size", type=lambda s: int(s, 0), default=4 * MiB)
    p.add_argument("--timeout", type=float, default=30,
                   help="seconds an op may take before it is a hang")
    p.add_argument("--wait-timeout", type=int, default=120)
    p.add_argument("--transcripts", action="store_true",
                   help="the mount runs with transcripts=on")
    p.add_argument("--temp-names", default=DEFAULT_TEMP)
    p.add_argument("--tusfs", default="tusfs")
    p.add_argument("--inspect", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "backend",
        "inspect.js"))
    p.add_argument("--trace-file")
    p.add_argument("--on-hang", help="shell command run on a hang")
    a = p.parse_args()
    ex = Exerciser(a)
    t0 = time.monotonic()
    try:
        ex.run()
    except Divergence as e:
        print("DIVERGENCE seed %d op %d: %s" % (a.seed, ex.opno, e),
              file=sys.stderr)
        ex.dump_trace()
        return 1
    print("seed %d%s: %d ops passed in %.1f s (%s); %d files on the server" %
          (a.seed, " scenario " + a.scenario if a.scenario else "",
           ex.opno - 1, time.monotonic() - t0,
           " ".join("%s=%d" % kv for kv in sorted(ex.counts.items())),
           getattr(ex, "checked", 0)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
