// tusfs reference backend: the transcription task API (tests/backend/tasks.js).
//
// server.js tells Tasks about every finished upload (uploadFinished) and
// puts Tasks#stage in its pipeline; semantics, switches and JSON shapes
// are documented at the top of server.js. transcribe.js looks at files.
//
// Tasks are kept in memory and, so that a backend restarted on the same
// --dir still knows them, one JSON file per task in DIR/.tasks/ (named by
// the sha256 of the task id; a deleted task leaves a tombstone there). At
// start-up a task that was processing starts over from "queued", and a
// finished upload with a taskId but no task (the backend died during
// --task-delay) gets its task as if it had just finished (where to look
// for those is opts.pickUp's business when given: the tuspyserver profile
// reads its hook record instead of the store).
//
// A task reads its recording from DIR/<uploadId>, or from upload.file when
// the upload handed to uploadFinished/createNow names one (the
// tuspyserver profile's service hook moves the file away); that path is
// kept in the record, relative to DIR.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

import { fakeTranscript, pocketsphinx, probe } from './transcribe.js';

export const GARBAGE_KINDS = ['html', 'truncated', 'types', 'huge', 'segments'];
export const TRANSCRIBERS = ['fake', 'pocketsphinx'];
export const DEFAULT_FAIL_MESSAGE = 'transcription failed: the model could not decode the audio';
export const UNSUPPORTED_MESSAGE = 'unsupported file: not an audio or video format';
export const HUGE_BYTES = 50 * 1024 * 1024;

const FAKE_STAGES = [
  ['queued', 0], ['transcribing', 25], ['aligning', 50], ['diarizing', 75],
];

// 2026-01-29T18:22:29Z: ISO 8601, UTC, no milliseconds.
export function isoSeconds(ms) {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

const round3 = (x) => Math.round(x * 1000) / 1000;

function sendBody(res, status, type, body, headers = {}) {
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': body.length, ...headers });
  res.end(body);
}

function sendJson(res, status, value, headers = {}) {
  sendBody(res, status, 'application/json', Buffer.from(JSON.stringify(value), 'utf8'), headers);
}

// Resolves true after ms, false as soon as the client went away.
function hold(res, ms) {
  return new Promise((resolve) => {
    if (res.destroyed) {
      resolve(false);
      return;
    }
    const onClose = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      res.off('close', onClose);
      resolve(!res.destroyed);
    }, ms);
    res.once('close', onClose);
  });
}

// FastAPI's 422 for a query parameter.
function invalidQuery(name, input, type, msg, ctxInfo) {
  const item = { type, loc: ['query', name], msg, input };
  if (ctxInfo) item.ctx = ctxInfo;
  return { detail: [item] };
}

function intQuery(params, name, dflt, min, max) {
  const raw = params.get(name);
  if (raw === null) return { value: dflt };
  if (!/^\s*[-+]?\d+\s*$/.test(raw)) {
    return { error: invalidQuery(name, raw, 'int_parsing', 'Input should be a valid integer, unable to parse string as an integer') };
  }
  const value = Number(raw);
  if (value < min) {
    return { error: invalidQuery(name, raw, 'greater_than_equal', `Input should be greater than or equal to ${min}`, { ge: min }) };
  }
  if (value > max) {
    return { error: invalidQuery(name, raw, 'less_than_equal', `Input should be less than or equal to ${max}`, { le: max }) };
  }
  return { value };
}

// Which task route a path is: { route, id, allow } or null.
function matchRoute(pathname) {
  const decode = (s) => {
    try {
      return decodeURIComponent(s);
    } catch {
      return s;
    }
  };
  if (pathname === '/task/all') return { route: 'all', allow: 'GET' };
  let m = /^\/task\/([^/]+)$/.exec(pathname);
  if (m) return { route: 'get', id: decode(m[1]), allow: 'GET' };
  m = /^\/task\/([^/]+)\/delete$/.exec(pathname);
  if (m) return { route: 'delete', id: decode(m[1]), allow: 'DELETE' };
  m = /^\/tasks\/([^/]+)\/progress$/.exec(pathname);
  if (m) return { route: 'progress', id: decode(m[1]), allow: 'GET' };
  return null;
}

// Persisted fields of a task (everything else is runtime state).
const RECORD_FIELDS = [
  'identifier', 'uploadId', 'seq', 'file_name', 'language', 'status', 'stage',
  'percentage', 'result', 'error', 'started', 'ended', 'audio_duration', 'file',
];

export class Tasks {
  // opts: { dir, transcriber, delayMs, stepMs, failMessage (string or
  // undefined), slowMs, garbage (kind or undefined), garbageCount
  // (undefined: every answer), pickUp (optional: () => [{ id, taskId,
  // metadata, file? }], the finished uploads load() checks for a task) }
  constructor(opts) {
    this.opts = opts;
    this.recordDir = path.join(opts.dir, '.tasks');
    this.tasks = new Map(); // id -> task
    this.uploadOf = new Map(); // id -> uploadId of its record (tombstones too)
    this.pending = new Map(); // id -> { timer, uploadId }
    this.seq = 0;
    this.closed = false;
    this.worker = Promise.resolve(); // pocketsphinx: one at a time
    this.stage = this.stage.bind(this);
  }

  // ---- records on disk

  recordFile(id) {
    return path.join(this.recordDir, `${crypto.createHash('sha256').update(id).digest('hex')}.json`);
  }

  writeRecord(id, value) {
    try {
      fs.mkdirSync(this.recordDir, { recursive: true });
      const file = this.recordFile(id);
      const tmp = `${file}.tmp.${process.pid}`;
      fs.writeFileSync(tmp, JSON.stringify(value));
      fs.renameSync(tmp, file);
    } catch (err) {
      process.stderr.write(`server.js: cannot write task record: ${err.message}\n`);
    }
  }

  save(t) {
    if (this.tasks.get(t.identifier) !== t) return; // deleted or replaced
    const rec = {};
    for (const k of RECORD_FIELDS) rec[k] = t[k];
    this.writeRecord(t.identifier, rec);
  }

  // Loads DIR/.tasks and picks up finished uploads that have no task yet.
  load() {
    let names = [];
    try {
      names = fs.readdirSync(this.recordDir).filter((n) => n.endsWith('.json'));
    } catch {
      // no records yet
    }
    const restart = [];
    for (const n of names) {
      let rec;
      try {
        rec = JSON.parse(fs.readFileSync(path.join(this.recordDir, n), 'utf8'));
      } catch {
        continue;
      }
      if (typeof rec.identifier !== 'string') continue;
      this.uploadOf.set(rec.identifier, rec.uploadId);
      if (rec.deleted) continue;
      const t = this.newTask(rec.identifier, rec.uploadId, rec);
      this.seq = Math.max(this.seq, t.seq);
      this.tasks.set(t.identifier, t);
      if (t.status === 'processing') restart.push(t);
    }
    for (const t of restart.sort((a, b) => a.seq - b.seq)) {
      Object.assign(t, { stage: 'queued', percentage: 0, result: null, error: null });
      this.save(t);
      this.run(t);
    }
    const finished = this.opts.pickUp ? this.opts.pickUp() : this.finishedUploads();
    for (const u of finished) {
      if (this.uploadOf.get(u.taskId) !== u.id) this.uploadFinished(u);
    }
  }

  // Complete uploads with a taskId in the store, the newest per taskId.
  finishedUploads() {
    const newest = new Map();
    let names = [];
    try {
      names = fs.readdirSync(this.opts.dir).filter((n) => n.endsWith('.json'));
    } catch {
      return [];
    }
    for (const n of names) {
      try {
        const info = JSON.parse(fs.readFileSync(path.join(this.opts.dir, n), 'utf8'));
        const meta = info.metadata ?? {};
        if (typeof meta.taskId !== 'string' || meta.taskId === '' || !Number.isInteger(info.size)) continue;
        if (fs.statSync(path.join(this.opts.dir, info.id)).size !== info.size) continue;
        const prev = newest.get(meta.taskId);
        if (prev && String(prev.creation_date) >= String(info.creation_date)) continue;
        newest.set(meta.taskId, info);
      } catch {
        // not an upload, or half written
      }
    }
    return [...newest.values()].map((info) => ({ id: info.id, taskId: info.metadata.taskId, metadata: info.metadata }));
  }

  // ---- lifecycle

  // The recording a task (or an upload handed to us) reads.
  fileOf(t) {
    return typeof t.file === 'string' ? path.resolve(this.opts.dir, t.file) : path.join(this.opts.dir, t.uploadId);
  }

  // The task for an upload, now rather than --task-delay later (the
  // service creates it inside the final request): resolves once it
  // exists.
  async createNow(id, upload) {
    if (this.closed) return;
    const old = this.pending.get(id);
    if (old) clearTimeout(old.timer);
    this.pending.delete(id);
    await this.create(id, upload);
  }

  // An upload received its last byte: { id, metadata, file? } (metadata
  // decoded; file: where its bytes are, when not DIR/<id>).
  uploadFinished(upload) {
    const meta = upload.metadata ?? {};
    const id = meta.taskId;
    if (typeof id !== 'string' || id === '' || this.closed) return;
    const old = this.pending.get(id);
    if (old) clearTimeout(old.timer);
    const timer = setTimeout(() => {
      this.pending.delete(id);
      this.create(id, upload).catch((err) => {
        process.stderr.write(`server.js: task ${id}: ${err && err.stack ? err.stack : err}\n`);
      });
    }, this.opts.delayMs);
    this.pending.set(id, { timer, uploadId: upload.id });
  }

  newTask(identifier, uploadId, fields = {}) {
    return {
      identifier,
      uploadId,
      seq: 0,
      file_name: null,
      language: 'en',
      status: 'processing',
      stage: 'queued',
      percentage: 0,
      result: null,
      error: null,
      started: Date.now(),
      ended: null,
      audio_duration: null,
      file: null,
      ...fields,
      // runtime only
      timers: new Set(),
      child: null,
      garbageServed: 0,
    };
  }

  // A task replaced or deleted: stop whatever it was doing.
  stop(t) {
    for (const timer of t.timers) clearTimeout(timer);
    t.timers.clear();
    if (t.child) t.child.kill('SIGKILL');
    t.stopped = true;
  }

  async create(id, upload) {
    const meta = upload.metadata ?? {};
    const rel = typeof upload.file === 'string' ? path.relative(this.opts.dir, upload.file) : null;
    const file = rel === null ? path.join(this.opts.dir, upload.id) : path.resolve(this.opts.dir, rel);
    let media = null;
    let duration = null;
    let readError = null;
    try {
      ({ media, duration } = await probe(file));
    } catch (err) {
      readError = err;
    }
    if (this.closed) return;
    const prev = this.tasks.get(id);
    if (prev) this.stop(prev);
    const lang = typeof meta.language === 'string' && meta.language !== '' ? meta.language : 'en';
    const t = this.newTask(id, upload.id, {
      seq: ++this.seq,
      file_name: typeof meta.filename === 'string' ? meta.filename : null,
      language: lang,
      file: rel,
    });
    this.tasks.set(id, t);
    this.uploadOf.set(id, upload.id);
    if (readError) {
      this.fail(t, `cannot read the upload: ${readError.message}`, { stage: null });
    } else if (media === null) {
      this.fail(t, UNSUPPORTED_MESSAGE, { stage: null });
    } else {
      if (this.opts.transcriber === 'fake') t.audio_duration = round3(duration);
      t.media = media;
      this.save(t);
      this.run(t);
    }
  }

  after(t, ms, fn) {
    const timer = setTimeout(() => {
      t.timers.delete(timer);
      if (!t.stopped && !this.closed) fn();
    }, ms);
    t.timers.add(timer);
  }

  setStage(t, stage, percentage) {
    t.stage = stage;
    t.percentage = percentage;
    this.save(t);
  }

  fail(t, message, { stage = t.stage } = {}) {
    if (t.stopped) return;
    Object.assign(t, { status: 'failed', stage, result: null, error: message, ended: Date.now() });
    this.save(t);
  }

  complete(t, segments) {
    if (t.stopped) return;
    Object.assign(t, {
      status: 'completed',
      stage: 'complete',
      percentage: 100,
      result: { segments, language: t.language },
      error: null,
      ended: Date.now(),
    });
    this.save(t);
  }

  // Runs a task from "queued" (t is new, or restarted at start-up).
  run(t) {
    const step = this.opts.stepMs;
    const file = this.fileOf(t);
    if (t.media === undefined) {
      // Restarted at start-up: look at the file again.
      probe(file).then(({ media, duration }) => {
        if (t.stopped) return;
        if (media === null) {
          this.fail(t, UNSUPPORTED_MESSAGE, { stage: null });
          return;
        }
        t.media = media;
        if (this.opts.transcriber === 'fake') t.audio_duration = round3(duration);
        this.run(t);
      }, (err) => this.fail(t, `cannot read the upload: ${err.message}`, { stage: null }));
      return;
    }
    if (this.opts.failMessage !== undefined) {
      this.after(t, step, () => {
        this.setStage(t, 'transcribing', 25);
        this.after(t, step, () => this.fail(t, this.opts.failMessage));
      });
      return;
    }
    if (this.opts.transcriber === 'fake') {
      const transcript = fakeTranscript(file);
      transcript.catch(() => {}); // handled below
      FAKE_STAGES.forEach(([stage, pct], i) => {
        if (i > 0) this.after(t, i * step, () => this.setStage(t, stage, pct));
      });
      this.after(t, FAKE_STAGES.length * step, () => {
        transcript.then(
          ({ segments }) => this.complete(t, segments),
          (err) => this.fail(t, `cannot read the upload: ${err.message}`),
        );
      });
      return;
    }
    // pocketsphinx: queued for at least one step and until the worker is free.
    this.after(t, step, () => {
      this.worker = this.worker.then(async () => {
        if (t.stopped || this.closed) return;
        this.setStage(t, 'transcribing', 25);
        try {
          const { duration, segments } = await pocketsphinx(file, t.media, {
            onChild: (child) => { t.child = child; },
          });
          t.audio_duration = round3(duration);
          this.complete(t, segments);
        } catch (err) {
          this.fail(t, err.message);
        }
      });
    });
  }

  deleteTask(id) {
    const t = this.tasks.get(id);
    if (!t) return false;
    this.stop(t);
    this.tasks.delete(id);
    this.writeRecord(id, { identifier: id, uploadId: t.uploadId, deleted: true });
    return true;
  }

  close() {
    this.closed = true;
    for (const { timer } of this.pending.values()) clearTimeout(timer);
    this.pending.clear();
    for (const t of this.tasks.values()) this.stop(t);
  }

  // ---- answers

  answer(t) {
    const ended = t.ended;
    return {
      status: t.status,
      result: t.result,
      metadata: {
        task_type: 'full_process',
        task_params: null,
        language: t.language,
        file_name: t.file_name,
        url: null,
        callback_url: null,
        duration: ended === null ? null : round3((ended - t.started) / 1000),
        audio_duration: t.audio_duration,
        start_time: isoSeconds(t.started),
        end_time: ended === null ? null : isoSeconds(ended),
      },
      error: t.error,
    };
  }

  progress(t) {
    return {
      identifier: t.identifier,
      status: t.status,
      progress_percentage: t.percentage,
      progress_stage: t.stage,
      error: t.error,
    };
  }

  summary(t) {
    const a = this.answer(t);
    return {
      identifier: t.identifier,
      status: t.status,
      task_type: a.metadata.task_type,
      file_name: t.file_name,
      language: t.language,
      audio_duration: a.metadata.audio_duration,
      duration: a.metadata.duration,
      start_time: a.metadata.start_time,
      end_time: a.metadata.end_time,
      error: t.error,
    };
  }

  list(params) {
    const page = intQuery(params, 'page', 1, 1, Number.MAX_SAFE_INTEGER);
    if (page.error) return { status: 422, body: page.error };
    const size = intQuery(params, 'page_size', 50, 1, 200);
    if (size.error) return { status: 422, body: size.error };
    const status = params.get('status');
    const q = params.get('q')?.toLowerCase();
    const all = [...this.tasks.values()]
      .filter((t) => status === null || t.status === status)
      .filter((t) => !q || (t.file_name ?? '').toLowerCase().includes(q))
      .sort((a, b) => a.seq - b.seq);
    const from = (page.value - 1) * size.value;
    return {
      status: 200,
      body: {
        tasks: all.slice(from, from + size.value).map((t) => this.summary(t)),
        total: all.length,
        page: page.value,
        page_size: size.value,
      },
    };
  }

  // ---- garbage (--task-garbage)

  async sendGarbage(res, t) {
    const real = this.answer(t);
    switch (this.opts.garbage) {
      case 'html':
        return sendBody(res, 200, 'text/html; charset=UTF-8', Buffer.from(
          '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">' +
          '<title>api.example.com | 502: Bad gateway</title></head>\n<body>\n' +
          '<h1>Bad gateway <span>Error code 502</span></h1>\n' +
          '<p>The web server reported a bad gateway error.</p>\n' +
          '<p>Cloudflare Ray ID: 8c0ffee0deadbeef &bull; Performance &amp; security by Cloudflare</p>\n' +
          '</body>\n</html>\n', 'utf8'));
      case 'truncated': {
        const whole = Buffer.from(JSON.stringify(real), 'utf8');
        return sendBody(res, 200, 'application/json', whole.subarray(0, Math.floor(whole.length / 2)));
      }
      case 'types':
        return sendJson(res, 200, {
          status: 1,
          result: JSON.stringify(real.result),
          metadata: [real.metadata.task_type, real.metadata.language, real.metadata.file_name],
          error: null,
        });
      case 'segments':
        return sendJson(res, 200, {
          status: 'completed',
          result: {
            segments: [
              { start: 0, end: 1.5, text: ' This one is fine.' },
              { start: 1.5, text: ' This one has no end.' },
              { start: 3, end: 4.5, speaker: 'SPEAKER_00' },
              { end: 6, text: ' This one has no start.' },
              { start: 6, end: 7.5, text: ' Fine again.' },
            ],
            language: real.metadata.language,
          },
          metadata: real.metadata,
          error: null,
        });
      case 'huge':
        return sendHuge(res, { status: 'processing', result: null, metadata: real.metadata, error: null });
      default:
        throw new Error(`unknown garbage ${this.opts.garbage}`);
    }
  }

  // ---- the pipeline stage

  async stage(ctx, next) {
    const r = matchRoute(ctx.url.pathname);
    if (r === null) return next();
    const { req, res } = ctx;
    req.resume(); // no task route reads a body
    if (this.opts.slowMs !== undefined) {
      ctx.fault = 'slow';
      if (!(await hold(res, this.opts.slowMs))) return;
    }
    if (req.method !== r.allow) {
      return sendJson(res, 405, { detail: 'Method Not Allowed' }, { Allow: r.allow });
    }
    if (r.route === 'all') {
      const { status, body } = this.list(ctx.url.searchParams);
      return sendJson(res, status, body);
    }
    const t = this.tasks.get(r.id);
    if (!t) return sendJson(res, 404, { detail: 'Task not found' });
    switch (r.route) {
      case 'progress':
        return sendJson(res, 200, this.progress(t));
      case 'delete':
        this.deleteTask(r.id);
        return sendJson(res, 200, { identifier: r.id, message: 'Task deleted' });
      default: {
        const n = this.opts.garbageCount;
        if (this.opts.garbage !== undefined && (n === undefined || t.garbageServed < n)) {
          t.garbageServed += 1;
          ctx.fault = 'garbage';
          return this.sendGarbage(res, t);
        }
        return sendJson(res, 200, this.answer(t));
      }
    }
  }
}

// HUGE_BYTES of JSON: {"padding":"xxx...", <value's members>}, written a
// MiB at a time as the client takes it, never held in memory.
async function sendHuge(res, value) {
  const prefix = Buffer.from('{"padding":"');
  const suffix = Buffer.from(`",${JSON.stringify(value).slice(1)}`, 'utf8');
  let left = HUGE_BYTES - prefix.length - suffix.length;
  const chunk = Buffer.alloc(1024 * 1024, 'x');
  res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': HUGE_BYTES });
  const drained = () => new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.once('drain', done);
    res.once('close', done);
  });
  if (!res.write(prefix)) await drained();
  while (left > 0) {
    if (res.destroyed) return;
    const n = Math.min(left, chunk.length);
    left -= n;
    if (!res.write(n === chunk.length ? chunk : chunk.subarray(0, n))) await drained();
  }
  if (!res.destroyed) res.end(suffix);
}
