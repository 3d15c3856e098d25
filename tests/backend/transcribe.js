// tusfs reference backend: what server.js does with a finished upload's
// bytes (tests/backend/transcribe.js). The task registry and routes are in
// tasks.js; this file only looks at files.
//
//   sniff(file)        what the magic bytes say: { kind, soxType } or null
//                      for anything that is not audio or video
//   mediaDuration(...) seconds of audio: from the WAV header for a WAV
//                      (data bytes / byte rate), else size / 16000
//   fakeTranscript     the fake transcriber: a transcript that depends on
//                      the file's bytes only (sha256 and duration)
//   pocketsphinx       the real one: sox, then pocketsphinx_continuous
//
// fakeTranscript, in detail. The sha256 of the whole file seeds a PRNG
// (sfc32, the digest's first 16 bytes as its state); everything below is
// drawn from it, in order, so the same bytes give the same transcript on
// any machine, whatever the file is called or whichever task it is in.
//   - n = round(duration / 4) segments, at least 1, at most 500; the
//     timeline is max(duration, 1) s cut into n equal slots and segment i
//     lies inside slot i, up to 15% of the slot shorter at either end.
//   - 2..8 words per segment from WORDS (ASCII and non-ASCII: accents,
//     Latvian, Greek, Cyrillic, CJK, an emoji); the first is capitalised,
//     the last one may carry "." "," "?" or "!". text = " " + words joined
//     by spaces (Whisper's leading space). Each word gets an equal share of
//     the segment (80% of it spoken), a score in 0.5..1.
//   - Segments alternate between having a "speaker" (SPEAKER_00 or
//     SPEAKER_01, drawn) and having none; whether the first one has one is
//     the digest's lowest bit. So any transcript of 2+ segments has both
//     kinds. Words of a segment with a speaker carry the same speaker.
//   - Times are rounded to 3 decimals (as WhisperX does).

import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

// ---------------------------------------------------------------------------
// Magic bytes

const HEAD_BYTES = 64 * 1024;

async function readHead(file, n = HEAD_BYTES) {
  const fh = await fs.promises.open(file, 'r');
  try {
    const buf = Buffer.alloc(n);
    const { bytesRead } = await fh.read(buf, 0, n, 0);
    const { size } = await fh.stat();
    return { head: buf.subarray(0, bytesRead), size };
  } finally {
    await fh.close();
  }
}

// What a file's first bytes say it is: { kind, soxType } (soxType: the
// -t sox gets, null when sox has no reader for it), or null.
export function sniffBuffer(b) {
  const at = (off, s) => b.length >= off + s.length && b.toString('latin1', off, off + s.length) === s;
  if (at(0, 'RIFF') && at(8, 'WAVE')) return { kind: 'wav', soxType: 'wav' };
  if (at(0, 'ID3')) return { kind: 'mp3', soxType: 'mp3' };
  if (b.length >= 2 && b[0] === 0xff && (b[1] & 0xe0) === 0xe0) return { kind: 'mp3', soxType: 'mp3' };
  if (at(0, 'OggS')) return { kind: 'ogg', soxType: 'ogg' };
  if (at(0, 'fLaC')) return { kind: 'flac', soxType: 'flac' };
  if (at(4, 'ftyp')) return { kind: 'mp4', soxType: null };
  if (b.length >= 4 && b.readUInt32BE(0) === 0x1a45dfa3) return { kind: 'webm', soxType: null };
  return null;
}

// { media: sniffBuffer's answer or null, duration: seconds }.
export async function probe(file) {
  const { head, size } = await readHead(file);
  const media = sniffBuffer(head);
  return { media, size, duration: mediaDuration(head, size, media) };
}

// Seconds of audio: data bytes / byte rate from a WAV header, else (not a
// WAV, or a header we cannot read) size / 16000.
export function mediaDuration(head, size, media = sniffBuffer(head)) {
  const fallback = size / 16000;
  if (!media || media.kind !== 'wav') return fallback;
  let byteRate = 0;
  let off = 12;
  while (off + 8 <= head.length) {
    const id = head.toString('latin1', off, off + 4);
    const len = head.readUInt32LE(off + 4);
    const body = off + 8;
    if (id === 'fmt ' && body + 12 <= head.length) {
      byteRate = head.readUInt32LE(body + 8);
    } else if (id === 'data') {
      if (byteRate === 0) return fallback;
      // Streamed WAVs leave the size at 0 or 0xffffffff: the rest of the file.
      const avail = Math.max(0, size - body);
      const bytes = len === 0 || len === 0xffffffff || len > avail ? avail : len;
      return bytes / byteRate;
    }
    off = body + len + (len & 1);
  }
  return fallback;
}

// ---------------------------------------------------------------------------
// The fake transcriber

export const WORDS = [
  'hello', 'world', 'the', 'upload', 'service', 'quiet', 'river', 'morning',
  'transcript', 'file', 'it\'s', 'over', 'there', 'seven', 'minutes', 'later',
  'café', 'naïve', 'Rīga', 'Zürich', '東京', '🎙', 'jalapeño', 'façade',
  'smörgåsbord', 'über', 'señor', 'résumé', 'Kraków', 'Ærø', 'Ελλάδα', 'Привет',
  'ķirbis', 'Ōsaka', 'naïveté', '北京', 'straße', 'São', 'Paulo', 'crème',
];
const PUNCT = ['.', ',', '?', '!'];

// sfc32: a small PRNG with a 128-bit state, uniform in [0, 1).
function sfc32(a, b, c, d) {
  return () => {
    a >>>= 0; b >>>= 0; c >>>= 0; d >>>= 0;
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return (t >>> 0) / 4294967296;
  };
}

const round3 = (x) => Math.round(x * 1000) / 1000;

export async function sha256File(file) {
  const hash = crypto.createHash('sha256');
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 })) hash.update(chunk);
  return hash.digest();
}

// The fake transcript of bytes with this sha256 digest and duration.
export function fakeSegments(digest, duration) {
  const rng = sfc32(digest.readUInt32BE(0), digest.readUInt32BE(4),
    digest.readUInt32BE(8), digest.readUInt32BE(12));
  for (let i = 0; i < 12; i++) rng(); // mix the seed in
  const pick = (list) => list[Math.floor(rng() * list.length)];
  const n = Math.min(500, Math.max(1, Math.round(duration / 4)));
  const slot = Math.max(duration, 1) / n;
  const speakerFirst = (digest[31] & 1) === 0;
  const segments = [];
  for (let i = 0; i < n; i++) {
    const s = i * slot + slot * 0.15 * rng();
    const e = (i + 1) * slot - slot * 0.15 * rng();
    const hasSpeaker = (i % 2 === 0) === speakerFirst;
    const speaker = hasSpeaker ? (rng() < 0.5 ? 'SPEAKER_00' : 'SPEAKER_01') : null;
    const k = 2 + Math.floor(rng() * 7);
    const texts = [];
    for (let j = 0; j < k; j++) texts.push(pick(WORDS));
    texts[0] = texts[0].charAt(0).toUpperCase() + texts[0].slice(1);
    const punct = rng();
    if (punct < 0.6) texts[k - 1] += PUNCT[Math.floor(punct / 0.15)];
    const words = texts.map((word, j) => {
      const w = {
        word,
        start: round3(s + ((e - s) * j) / k),
        end: round3(s + ((e - s) * (j + 0.8)) / k),
        score: round3(0.5 + 0.5 * rng()),
      };
      if (speaker) w.speaker = speaker;
      return w;
    });
    const seg = { start: round3(s), end: round3(e), text: ` ${texts.join(' ')}` };
    if (speaker) seg.speaker = speaker;
    seg.words = words;
    segments.push(seg);
  }
  return segments;
}

export async function fakeTranscript(file) {
  const { media, duration } = await probe(file);
  const digest = await sha256File(file);
  return { media, duration, segments: fakeSegments(digest, duration) };
}

// ---------------------------------------------------------------------------
// pocketsphinx: sox to 16 kHz mono 16-bit WAV, then Debian's
// pocketsphinx_continuous (0.8+5prealpha) with the en-us model.

export const PS_MODEL = '/usr/share/pocketsphinx/model/en-us';

// Runs a program; resolves { code, stdout, stderr } (code null and
// error set if it could not start or was killed). onChild gets the child,
// for killing.
function run(cmd, args, onChild) {
  return new Promise((resolve) => {
    let child;
    try {
      child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (err) {
      resolve({ code: null, stdout: '', stderr: '', error: err });
      return;
    }
    onChild?.(child);
    const out = [];
    const err = [];
    child.stdout.on('data', (c) => out.push(c));
    child.stderr.on('data', (c) => err.push(c));
    let spawnError = null;
    child.once('error', (e) => { spawnError = e; });
    child.once('close', (code, signal) => {
      onChild?.(null);
      resolve({
        code: spawnError ? null : code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        error: spawnError,
      });
    });
  });
}

const firstLines = (text, n = 3) =>
  text.split('\n').map((l) => l.trim()).filter(Boolean).slice(0, n).join(' ');

function failure(what, r, extra = '') {
  if (r.error) return `${what}: ${r.error.message}`;
  if (r.signal) return `${what}: killed by ${r.signal}`;
  const msg = firstLines(extra) || firstLines(r.stderr);
  return `${what} failed (exit status ${r.code})${msg ? `: ${msg}` : ''}`;
}

// pocketsphinx_continuous -time yes prints, per utterance, its hypothesis
// on one line, then one line per word: WORD START END PROB, the utterance
// framed by <s> ... </s>, with <sil> and fillers ([NOISE], ++UH++) between
// words; alternative pronunciations are written word(2). Times are from
// the start of the file. One segment per utterance, split where a pause
// of 1 s or more falls inside it.
export function parsePocketsphinx(out) {
  const WORD = /^(\S+) (\d+(?:\.\d+)?) (\d+(?:\.\d+)?) (\d+(?:\.\d+)?(?:e[-+]?\d+)?)$/;
  const segments = [];
  let words = [];
  const flush = () => {
    if (words.length > 0) {
      segments.push({
        start: words[0].start,
        end: words[words.length - 1].end,
        text: ` ${words.map((w) => w.word).join(' ')}`,
        words,
      });
    }
    words = [];
  };
  for (const line of out.split('\n')) {
    const m = WORD.exec(line.trim());
    if (!m) {
      // A hypothesis line: a new utterance follows.
      if (line.trim()) flush();
      continue;
    }
    const [, token, s, e, p] = m;
    const start = round3(Number(s));
    const end = round3(Number(e));
    if (token === '<s>' || token === '</s>') {
      flush();
      continue;
    }
    if (token === '<sil>' || /^\[.*\]$/.test(token) || /^\+\+.*\+\+$/.test(token)) {
      if (end - start >= 1) flush();
      continue;
    }
    words.push({ word: token.replace(/\(\d+\)$/, ''), start, end, score: round3(Number(p)) });
  }
  flush();
  return segments;
}

// Transcribes file; resolves { duration, segments } or rejects with an
// Error whose message is sox's or pocketsphinx's complaint.
// opts.onChild(child) is told of each child process (null when it ended),
// so that a deleted task can kill it.
export async function pocketsphinx(file, media, opts = {}) {
  const tmp = await fs.promises.mkdtemp(path.join(os.tmpdir(), 'tusfs-task-'));
  try {
    const wav = path.join(tmp, 'audio.wav');
    const soxArgs = ['-D', '-V1'];
    if (media && media.soxType) soxArgs.push('-t', media.soxType);
    soxArgs.push(file, '-r', '16000', '-c', '1', '-b', '16', '-e', 'signed-integer', '-t', 'wav', wav,
      'gain', '-n', '-3');
    const sox = await run('sox', soxArgs, opts.onChild);
    if (sox.code !== 0) throw new Error(failure('sox', sox));
    const { head, size } = await readHead(wav);
    const duration = mediaDuration(head, size);

    const log = path.join(tmp, 'pocketsphinx.log');
    const ps = await run('pocketsphinx_continuous', [
      '-infile', wav, '-time', 'yes', '-logfn', log,
      '-hmm', path.join(PS_MODEL, 'en-us'),
      '-lm', path.join(PS_MODEL, 'en-us.lm.bin'),
      '-dict', path.join(PS_MODEL, 'cmudict-en-us.dict'),
    ], opts.onChild);
    if (ps.code !== 0) {
      let logText = '';
      try {
        logText = (await fs.promises.readFile(log, 'utf8')).split('\n')
          .filter((l) => /^(ERROR|FATAL)/.test(l)).join('\n');
      } catch {
        // no log: stderr it is
      }
      throw new Error(failure('pocketsphinx', ps, logText));
    }
    return { duration, segments: parsePocketsphinx(ps.stdout) };
  } finally {
    await fs.promises.rm(tmp, { recursive: true, force: true });
  }
}
