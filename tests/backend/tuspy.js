// The tuspyserver profile of the reference backend (server.js --profile
// tuspyserver): the TUS routes as tuspyserver 4.2.3 answers them, written
// here from its observable behaviour (BACKEND.md 1b), plus the service's
// completion hook (--service-hook). What it does, request by request, is
// documented at the top of server.js; this file is the how.
//
// Store layout, as tuspyserver's: DIR/<uid> (the bytes, written in append
// mode) and DIR/<uid>.info (JSON: metadata, size, offset, upload_part,
// created_at, defer_length, upload_chunk_size, expires, error, is_partial,
// is_final, partial_uploads; plus expires_ms, our exact expiry). The
// offset is the info's, not the data file's size. The service hook moves
// DIR/<uid> to DIR/.taken/<uid><ext>. Every hook run appends a line to
// DIR/.hooks.jsonl. inspect.js reads all of this.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

import { fileTypeFromBuffer } from 'file-type';

import { TUS_PATH } from './http-util.js';

export const TUSPY_MAX_SIZE = 5368709120;
export const TUSPY_EXPIRATION_MS = 24 * 3600 * 1000; // days_to_keep=1
export const TUSPY_LOCK_WAIT_MS = 30000;
export const HOOK_RECORD = '.hooks.jsonl';
export const TAKEN_DIR = '.taken';

const TUS_VERSION = '1.0.0';
const EXTENSIONS = 'creation,creation-defer-length,creation-with-upload,expiration,termination,concatenation';
const OCTETS = 'application/offset+octet-stream';

// The service's allow-list: extension -> canonical extension.
const CANONICAL = {
  '.mp3': '.mp3', '.wav': '.wav', '.aac': '.aac', '.ogg': '.ogg', '.oga': '.ogg',
  '.m4a': '.m4a', '.wma': '.wma', '.amr': '.amr', '.flac': '.flac', '.awb': '.awb',
  '.mp4': '.mp4', '.m4v': '.mp4', '.mov': '.mov', '.qt': '.mov', '.avi': '.avi',
  '.wmv': '.wmv', '.mkv': '.mkv', '.webm': '.webm', '.ogv': '.webm',
};
// file-type's names that differ from the service's.
const DETECTED = { opus: '.ogg', spx: '.ogg', asf: '.asf' };

// ---------------------------------------------------------------------------
// Small helpers

// Answers, unless the client is gone (a PATCH goes on after a disconnect,
// as tuspyserver's does, with nobody to answer).
function sendJson(res, status, value, headers = {}) {
  if (res.destroyed) return;
  const body = Buffer.from(JSON.stringify(value), 'utf8');
  res.writeHead(status, { 'Content-Length': body.length, 'Content-Type': 'application/json', ...headers });
  res.end(body);
}

// FastAPI's HTTPException answer.
function detail(res, status, text, headers = {}) {
  sendJson(res, status, { detail: text }, headers);
}

// Python's int() on a header value: sign, digits with single underscores,
// surrounding white space. NaN when it would raise.
function pyInt(v) {
  if (typeof v !== 'string' || !/^\s*[+-]?\d+(_\d+)*\s*$/.test(v)) return NaN;
  return Number(v.trim().replace(/_/g, ''));
}

function header(req, name) {
  const v = req.headers[name];
  return v === undefined ? null : Array.isArray(v) ? v.join(', ') : v;
}

// Header params FastAPI validates as int (after the dependencies ran):
// the 422 body for the failing ones (pydantic 2 shapes), or null.
function invalidHeaders(req, required, optional) {
  const errors = [];
  for (const name of [...required, ...optional]) {
    const v = header(req, name);
    if (v === null) {
      if (required.includes(name)) {
        errors.push({ type: 'missing', loc: ['header', name], msg: 'Field required', input: null });
      }
    } else if (Number.isNaN(pyInt(v))) {
      errors.push({
        type: 'int_parsing', loc: ['header', name],
        msg: 'Input should be a valid integer, unable to parse string as an integer', input: v,
      });
    }
  }
  return errors.length ? { detail: errors } : null;
}

function pyRepr(obj) {
  const s = (v) => `'${String(v).replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
  return `{${Object.entries(obj).map(([k, v]) => `${s(k)}: ${s(v)}`).join(', ')}}`;
}

// Python's str(datetime.now()).
function pyNow() {
  const d = new Date();
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
    `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}000`;
}

// Path(name).suffix
function suffix(name) {
  const base = String(name).replace(/\/+$/, '').split('/').pop();
  const i = base.lastIndexOf('.');
  return i > 0 && i < base.length - 1 ? base.slice(i) : '';
}

// Upload-Metadata as tuspyserver decodes it: bad base64 entries dropped, a
// key alone has "".
function parseMetadata(value) {
  const metadata = {};
  if (value === null || value === '') return metadata;
  for (let kv of value.split(',')) {
    kv = kv.trim();
    if (!kv) continue;
    const i = kv.lastIndexOf(' ');
    if (i < 0) {
      metadata[kv] = '';
      continue;
    }
    const key = kv.slice(0, i).trim();
    const b64 = kv.slice(i + 1).trim();
    if (!key || !/^[A-Za-z0-9+/]*={0,2}$/.test(b64) || b64.length % 4 !== 0) continue;
    const bytes = Buffer.from(b64, 'base64');
    const text = new TextDecoder('utf-8', { fatal: true });
    try {
      metadata[key] = text.decode(bytes);
    } catch {
      // not UTF-8: skipped, as tuspyserver does
    }
  }
  return metadata;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Reads a request body, handing each chunk to onChunk (which may return
// 'stop'). Resolves 'end', 'aborted' (the client went away) or 'stopped'.
// After 'stopped' the rest of the body is read and thrown away.
function readBody(source, onChunk) {
  return new Promise((resolve) => {
    let settled = false;
    const settle = (v) => {
      if (settled) return;
      settled = true;
      source.off('data', onData);
      resolve(v);
    };
    const onData = (chunk) => {
      if (settled) return;
      if (onChunk(chunk) === 'stop') {
        settle('stopped');
        source.resume();
      }
    };
    if (source.readableEnded) {
      settle('end');
      return;
    }
    if (source.destroyed) {
      settle(source.complete ? 'end' : 'aborted');
      return;
    }
    source.on('data', onData);
    source.once('end', () => settle('end'));
    source.on('error', () => settle('aborted'));
    source.once('close', () => settle(source.complete || source.readableEnded ? 'end' : 'aborted'));
    source.resume();
  });
}

// ---------------------------------------------------------------------------
// Magic bytes, as the service checks them (first 8 KiB, canonical forms).

async function detectCanonical(header8k) {
  if (header8k.subarray(0, 9).toString('latin1') === '#!AMR-WB\n') return '.awb';
  // An ID3 tag is MP3 to the service's detector whatever follows it.
  if (header8k.subarray(0, 3).toString('latin1') === 'ID3') return '.mp3';
  const ft = await fileTypeFromBuffer(header8k).catch(() => undefined);
  if (!ft) return null;
  const ext = DETECTED[ft.ext] ?? `.${ft.ext}`;
  if (ext === '.asf') return ext; // WMA or WMV: the container says no more
  return CANONICAL[ext] ?? null;
}

// { ok, message } for the file and the extension its filename claims.
export async function checkMagic(file, claimed) {
  let head;
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const buf = Buffer.alloc(8192);
      head = buf.subarray(0, fs.readSync(fd, buf, 0, buf.length, 0));
    } finally {
      fs.closeSync(fd);
    }
  } catch (err) {
    return { ok: false, message: `Could not read file: ${err.message}` };
  }
  if (head.length === 0) return { ok: false, message: 'File is empty' };
  const detected = await detectCanonical(head);
  if (detected === null) {
    return { ok: false, message: 'Unknown file format. Expected audio/video file, got unrecognized format.' };
  }
  let c = claimed.toLowerCase();
  if (!c.startsWith('.')) c = `.${c}`;
  c = CANONICAL[c] ?? c;
  if (detected === c || (detected === '.asf' && (c === '.wma' || c === '.wmv'))) {
    return { ok: true, message: `Valid ${c} file` };
  }
  const shown = detected === '.asf' ? '.wmv' : detected;
  return { ok: false, message: `File format mismatch: claimed ${claimed} but detected ${shown}` };
}

// ---------------------------------------------------------------------------
// The store

class Store {
  constructor(dir) {
    this.dir = dir;
  }

  dataPath(id) {
    return path.join(this.dir, id);
  }

  infoPath(id) {
    return path.join(this.dir, `${id}.info`);
  }

  // Upload ids name files in DIR: nothing hidden, no separators.
  static validId(id) {
    return typeof id === 'string' && id !== '' && !id.startsWith('.') && !/[/\\\0]/.test(id);
  }

  exists(id) {
    return fs.existsSync(this.dataPath(id));
  }

  // The info, or null when missing or unreadable.
  info(id) {
    try {
      const v = JSON.parse(fs.readFileSync(this.infoPath(id), 'utf8'));
      return v && typeof v === 'object' ? v : null;
    } catch {
      return null;
    }
  }

  saveInfo(id, info) {
    const file = this.infoPath(id);
    const tmp = `${file}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(info, null, 4));
    fs.renameSync(tmp, file);
  }

  remove(id) {
    fs.rmSync(this.dataPath(id), { force: true });
    fs.rmSync(this.infoPath(id), { force: true });
  }

  expired(info) {
    return typeof info.expires_ms === 'number' && info.expires_ms < Date.now();
  }
}

// Per-upload locks: a FIFO of waiters, each giving up after waitMs.
class Locks {
  constructor() {
    this.held = new Map(); // id -> [waiters]
  }

  // Resolves to a release function, or null after waitMs.
  acquire(id, waitMs) {
    const queue = this.held.get(id);
    if (!queue) {
      this.held.set(id, []);
      return Promise.resolve(() => this.release(id));
    }
    return new Promise((resolve) => {
      const waiter = {
        grant: () => {
          clearTimeout(timer);
          resolve(() => this.release(id));
        },
      };
      const timer = setTimeout(() => {
        const i = queue.indexOf(waiter);
        if (i >= 0) queue.splice(i, 1);
        resolve(null);
      }, waitMs);
      queue.push(waiter);
    });
  }

  release(id) {
    const queue = this.held.get(id);
    if (!queue) return;
    const next = queue.shift();
    if (next) next.grant();
    else this.held.delete(id);
  }
}

// ---------------------------------------------------------------------------
// The profile

// opts: { config, tasks, authorized(req) -> bool, unauthorized(ctx) }
export function makeTuspy(opts) {
  const { config, tasks, authorized, unauthorized } = opts;
  const p = config.tuspy;
  const store = new Store(config.dir);
  const locks = new Locks();
  const hookFile = path.join(config.dir, HOOK_RECORD);

  const expiresFields = () => {
    if (p.expirationMs === 0) return { expires: null, expires_ms: null };
    const at = Date.now() + p.expirationMs;
    return { expires: new Date(at).toUTCString(), expires_ms: at };
  };

  const location = (ctx, id) => {
    if (config.relativeLocation) return `${TUS_PATH}/${id}`;
    const { req } = ctx;
    const proto = header(req, 'x-forwarded-proto') ?? (config.tls ? 'https' : 'http');
    const host = header(req, 'x-forwarded-host') ?? header(req, 'host') ?? 'localhost:8000';
    return `${proto}://${host}${TUS_PATH}/${id}`;
  };

  const tusResumableOk = (req) => header(req, 'tus-resumable') === TUS_VERSION;
  const versionFailed = (res) => detail(res, 412, `Unsupported version. Expected ${TUS_VERSION}`,
    { 'Tus-Version': TUS_VERSION });

  // ---- hook

  const recordHook = (entry) => {
    try {
      fs.appendFileSync(hookFile, `${JSON.stringify(entry)}\n`);
    } catch (err) {
      process.stderr.write(`server.js: cannot write ${HOOK_RECORD}: ${err.message}\n`);
    }
  };

  // The completion hook for upload id (its info in hand). Resolves when
  // the final request may be answered; throws to make it a 500.
  const runHook = async (id, info, trigger) => {
    const metadata = info.metadata ?? {};
    const filename = typeof metadata.filename === 'string' ? metadata.filename : null;
    const entry = {
      time: new Date().toISOString(), id, taskId: metadata.taskId ?? null, filename, trigger,
      result: 'ok', reason: null, file: id,
    };
    if (!p.serviceHook) {
      recordHook(entry);
      if (typeof metadata.taskId === 'string' && metadata.taskId !== '') {
        tasks.uploadFinished({ id, metadata });
      }
      return;
    }
    const name = filename ?? id;
    const ext = suffix(name);
    const data = store.dataPath(id);
    const check = await checkMagic(data, ext);
    if (!check.ok) {
      entry.result = 'refused';
      entry.reason = `Invalid file type: magic bytes validation failed - ${check.message}`;
      entry.file = id;
      recordHook(entry);
      throw new Error(entry.reason);
    }
    const taken = path.join(config.dir, TAKEN_DIR, `${id}${ext}`);
    fs.mkdirSync(path.dirname(taken), { recursive: true });
    fs.renameSync(data, taken);
    if (p.decodeMs > 0) await sleep(p.decodeMs);
    const taskId = typeof metadata.taskId === 'string' && metadata.taskId !== ''
      ? metadata.taskId : crypto.randomUUID();
    entry.taskId = taskId;
    entry.file = path.relative(config.dir, taken);
    await tasks.createNow(taskId, { id, metadata, file: taken });
    recordHook(entry);
  };

  // Runs the hook inside the final request; false when it failed (the
  // 500 was sent, or would have been to a client still there).
  const hookInRequest = async (ctx, id, info, trigger) => {
    try {
      await runHook(id, info, trigger);
      return true;
    } catch (err) {
      if (!p.serviceHook) process.stderr.write(`server.js: hook: ${err && err.stack ? err.stack : err}\n`);
      return false;
    }
  };

  const hookFailedAnswer = (res) => sendJson(res, 500, {
    error: { message: 'An unexpected error occurred', code: 'INTERNAL_ERROR' },
  });

  // Finished uploads for Tasks#load: the newest "ok" hook run per taskId.
  const pickUp = () => {
    let lines = [];
    try {
      lines = fs.readFileSync(hookFile, 'utf8').split('\n');
    } catch {
      return [];
    }
    const newest = new Map();
    for (const l of lines) {
      try {
        const e = JSON.parse(l);
        if (e.result !== 'ok' || typeof e.taskId !== 'string') continue;
        const info = store.info(e.id);
        if (!info) continue;
        newest.set(e.taskId, {
          id: e.id, taskId: e.taskId, metadata: info.metadata ?? {},
          file: path.resolve(config.dir, e.file ?? e.id),
        });
      } catch {
        // a torn line
      }
    }
    return [...newest.values()];
  };

  // ---- routes

  const options = (ctx) => {
    const { req, res } = ctx;
    const v = header(req, 'tus-resumable');
    if (v !== null && v !== TUS_VERSION) return versionFailed(res);
    res.writeHead(204, {
      'Tus-Version': TUS_VERSION, 'Tus-Resumable': TUS_VERSION, 'Tus-Extension': EXTENSIONS,
      'Tus-Max-Size': String(p.maxSize), 'Content-Length': '0',
    });
    res.end();
  };

  const post = async (ctx) => {
    const { req, res } = ctx;
    // The service's completion-hook dependency checks the key first.
    if (!authorized(req)) return unauthorized(ctx);
    const bad = invalidHeaders(req, [], ['upload-length', 'upload-defer-length']);
    if (bad) return sendJson(res, 422, bad);
    if (!tusResumableOk(req)) return versionFailed(res);
    const lengthHdr = header(req, 'upload-length');
    const deferHdr = header(req, 'upload-defer-length');
    if (deferHdr !== null && pyInt(deferHdr) !== 1) return detail(res, 400, 'Invalid Upload-Defer-Length');
    const metadata = parseMetadata(header(req, 'upload-metadata'));

    let isPartial = false;
    let isFinal = false;
    let partials = null;
    let size = lengthHdr === null ? null : pyInt(lengthHdr);
    const concat = header(req, 'upload-concat');
    if (concat !== null) {
      const c = concat.trim();
      if (c === 'partial') {
        isPartial = true;
      } else if (c.startsWith('final;')) {
        isFinal = true;
        const list = c.slice(6).trim().split(/\s+/).filter(Boolean);
        if (list.length === 0) return detail(res, 400, 'Upload-Concat final header must specify partial uploads');
        partials = list.map((u) => u.split('/').filter(Boolean).pop());
        size = 0;
        for (const uid of partials) {
          if (!Store.validId(uid) || !store.exists(uid)) return detail(res, 404, `Partial upload not found: ${uid}`);
          const pi = store.info(uid);
          if (!pi) return detail(res, 400, `Partial upload has no metadata: ${uid}`);
          if (!pi.is_partial) return detail(res, 400, `Upload ${uid} is not a partial upload`);
          if (pi.size !== null && pi.offset !== pi.size) {
            return detail(res, 400,
              `Partial upload ${uid} is not complete (offset=${pi.offset}, size=${pi.size})`);
          }
          size += fs.statSync(store.dataPath(uid)).size;
        }
        if (lengthHdr !== null) {
          return detail(res, 400, 'Upload-Length header must not be included for final concatenated uploads');
        }
        if (deferHdr !== null) {
          return detail(res, 400, 'Upload-Defer-Length header must not be included for final concatenated uploads');
        }
      } else {
        return detail(res, 400, 'Invalid Upload-Concat header value');
      }
    }

    const id = crypto.randomUUID().replace(/-/g, '');
    const info = {
      metadata, size, offset: 0, upload_part: 0, created_at: pyNow(),
      defer_length: deferHdr !== null, upload_chunk_size: 0, ...expiresFields(),
      error: null, is_partial: isPartial, is_final: isFinal, partial_uploads: partials,
    };
    fs.writeFileSync(store.dataPath(id), '');
    store.saveInfo(id, info);

    // creation-with-upload: the whole body in memory, then written; no
    // size check. A client gone mid-body leaves the upload empty.
    let initial = 0;
    const cl = pyInt(header(req, 'content-length') ?? '');
    if (cl > 0) {
      const chunks = [];
      const how = await readBody(ctx.tusReq ?? req, (chunk) => {
        chunks.push(chunk);
      });
      if (how === 'end') {
        const body = Buffer.concat(chunks);
        if (body.length > 0) {
          fs.appendFileSync(store.dataPath(id), body);
          info.offset += body.length;
          info.upload_part += 1;
          store.saveInfo(id, info);
          initial = body.length;
        }
      }
    }

    if (isFinal) {
      const fd = fs.openSync(store.dataPath(id), 'w');
      try {
        for (const uid of partials) fs.writeSync(fd, fs.readFileSync(store.dataPath(uid)));
      } finally {
        fs.closeSync(fd);
      }
      info.offset = size;
      store.saveInfo(id, info);
      for (const uid of partials) store.remove(uid);
    }

    const headers = { Location: location(ctx, id), 'Tus-Resumable': TUS_VERSION, 'Content-Length': '0' };
    if (initial > 0) headers['Upload-Offset'] = String(info.offset);
    if (info.expires) headers['Upload-Expires'] = info.expires;
    if (info.size === 0 || (isFinal && info.offset === info.size)) {
      if (!(await hookInRequest(ctx, id, info, 'post'))) return hookFailedAnswer(res);
    }
    if (res.destroyed) return;
    res.writeHead(201, headers);
    res.end();
  };

  const head = (ctx, id) => {
    const { req, res } = ctx;
    if (!tusResumableOk(req)) return versionFailed(res);
    const info = store.exists(id) ? store.info(id) : null;
    if (!info) return detail(res, 404, 'Not Found');
    if (store.expired(info)) return detail(res, 410, 'Upload expired');
    const m = info.metadata ?? {};
    const filename = m.filename ?? m.name ?? null;
    const filetype = m.filetype ?? m.type ?? null;
    if (!info.is_partial) {
      if (filename === null) {
        return detail(res, 400,
          `Upload-file.metadata missing required field: filename (metadata: ${pyRepr(m)})`);
      }
      if (filetype === null) {
        return detail(res, 400, `Upload-Metadata missing required field: filetype (metadata: ${pyRepr(m)})`);
      }
    }
    const b64 = (s) => Buffer.from(s, 'utf8').toString('base64');
    const headers = { 'Tus-Resumable': TUS_VERSION };
    const parts = [];
    if (filename) parts.push(`filename ${b64(filename)}`);
    if (filetype) parts.push(`filetype ${b64(filetype)}`);
    if (parts.length) headers['Upload-Metadata'] = parts.join(', ');
    if (info.defer_length) {
      headers['Upload-Defer-Length'] = '1';
    } else if (info.size === null) {
      // tuspyserver sends "Content-Length: None", which its HTTP layer
      // refuses to write: the connection closes with no answer.
      res.destroy();
      return;
    } else {
      headers['Upload-Length'] = String(info.size);
      headers['Content-Length'] = String(info.size);
    }
    headers['Upload-Offset'] = String(info.offset);
    headers['Cache-Control'] = 'no-store';
    if (info.is_partial) headers['Upload-Concat'] = 'partial';
    else if (info.is_final) {
      headers['Upload-Concat'] = info.partial_uploads?.length
        ? `final;${info.partial_uploads.map((u) => location(ctx, u)).join(' ')}` : 'final';
    }
    res.writeHead(200, headers);
    res.end();
  };

  // The body part (tuspyserver's request_chunks dependency): 404, lock,
  // 410, offset checks, then the bytes, in append mode. Returns true when
  // the route goes on (also after a client disconnect: the bytes received
  // are saved), false when it answered.
  const storeBody = async (ctx, id) => {
    const { req, res } = ctx;
    if (!store.exists(id) || !store.info(id)) {
      detail(res, 404, 'Upload not found');
      return false;
    }
    const release = await locks.acquire(id, p.lockWaitMs);
    if (release === null) {
      detail(res, 503, `Timed out after ${(p.lockWaitMs / 1000).toFixed(1)}s waiting for lock ` +
        `${path.join(config.dir, '.locks', `${id}.lock`)}`);
      return false;
    }
    try {
      const info = store.info(id);
      if (!info) {
        detail(res, 404, 'Upload not found');
        return false;
      }
      if (store.expired(info)) {
        detail(res, 410, 'Upload expired');
        return false;
      }
      const offHdr = header(req, 'upload-offset');
      if (offHdr === null) {
        detail(res, 400, 'Upload-Offset header is required');
        return false;
      }
      const off = pyInt(offHdr);
      if (Number.isNaN(off)) {
        detail(res, 400, 'Invalid Upload-Offset header');
        return false;
      }
      if (off !== info.offset) {
        detail(res, 409, 'Offset mismatch');
        return false;
      }

      const start = info.offset;
      const plan = ctx.faultPlan; // --cut-after
      let written = 0;
      let refusal = null;
      let cut = false;
      const fd = fs.openSync(store.dataPath(id), 'a');
      try {
        await readBody(ctx.tusReq ?? req, (chunk) => {
          let c = chunk;
          if (plan && plan.limit !== undefined && written + c.length > plan.limit &&
              (plan.cut || plan.overflow())) {
            c = c.subarray(0, Math.max(0, plan.limit - written));
            cut = true;
          }
          if (c.length > 0) {
            if (info.size !== null && start + written + c.length > info.size) {
              refusal = [400, 'Upload would exceed declared Upload-Length'];
              return 'stop';
            }
            if (start + written + c.length > p.maxSize) {
              refusal = [413, 'Upload exceeds maximum allowed size'];
              return 'stop';
            }
            fs.writeSync(fd, c);
            written += c.length;
          }
          return cut ? 'stop' : undefined;
        });
      } finally {
        fs.closeSync(fd);
      }
      if (refusal) {
        // The chunks before it are in the file; the offset is not saved.
        detail(res, refusal[0], refusal[1]);
        return false;
      }
      info.offset = start + written;
      info.upload_chunk_size = written;
      info.upload_part += 1;
      store.saveInfo(id, info);
      if (cut) {
        // The first N bytes are stored; the client never hears of them.
        ctx.fault = 'cut';
        res.destroy();
        return false;
      }
      return true; // also when the client went away ('aborted')
    } finally {
      release();
    }
  };

  const patch = async (ctx, id) => {
    const { req, res } = ctx;
    if (!(await storeBody(ctx, id))) return;
    // Then the route's other dependencies and parameters, in FastAPI's
    // order; every refusal from here on comes after the bytes were saved.
    if (!authorized(req)) return unauthorized(ctx);
    const bad = invalidHeaders(req, ['content-length', 'upload-offset'], ['upload-length']);
    if (bad) return sendJson(res, 422, bad);
    if (!tusResumableOk(req)) return versionFailed(res);
    if (header(req, 'content-type') !== OCTETS) {
      return detail(res, 415, `Content-Type must be ${OCTETS}`);
    }
    const info = store.exists(id) ? store.info(id) : null;
    if (!info) return detail(res, 404, 'Not Found');
    if (store.expired(info)) return detail(res, 410, 'Upload expired');
    if (info.is_final) {
      return detail(res, 403,
        'Final concatenated uploads cannot be modified. They are immutable and created complete.');
    }
    const lengthHdr = header(req, 'upload-length');
    if (info.defer_length && lengthHdr !== null) {
      info.size = pyInt(lengthHdr);
      info.defer_length = false;
    }
    if (!info.expires && p.expirationMs !== 0) Object.assign(info, expiresFields());
    store.saveInfo(id, info);
    const headers = { 'Tus-Resumable': TUS_VERSION, 'Upload-Offset': String(info.offset) };
    if (info.expires) headers['Upload-Expires'] = info.expires;
    if (info.size === info.offset) {
      if (!(await hookInRequest(ctx, id, info, 'patch'))) return hookFailedAnswer(res);
    }
    if (ctx.faultPlan?.stall) {
      ctx.fault = 'stall';
      await sleep(ctx.faultPlan.stallMs);
    }
    if (res.destroyed) return;
    res.writeHead(204, headers);
    res.end();
  };

  const del = (ctx, id) => {
    const { req, res } = ctx;
    if (!tusResumableOk(req)) return versionFailed(res);
    if (!store.exists(id)) return detail(res, 404, 'Upload not found');
    const info = store.info(id);
    if (info && store.expired(info)) return detail(res, 410, 'Upload expired');
    store.remove(id);
    res.writeHead(204, { 'Tus-Resumable': TUS_VERSION });
    res.end();
  };

  const notAllowed = (ctx, allow) => {
    ctx.req.resume();
    detail(ctx.res, 405, 'Method Not Allowed', { Allow: allow });
  };

  // The router stage: TUS requests end here, the rest goes on.
  const stage = async (ctx, next) => {
    const { pathname } = ctx.url;
    const { method } = ctx.req;
    if (pathname === TUS_PATH || pathname === `${TUS_PATH}/`) {
      if (method === 'POST') return post(ctx);
      if (method === 'OPTIONS' && pathname !== TUS_PATH) return options(ctx);
      return notAllowed(ctx, pathname === TUS_PATH ? 'POST' : 'OPTIONS, POST');
    }
    const m = new RegExp(`^${TUS_PATH}/([^/]+)$`).exec(pathname);
    if (!m) {
      if (pathname.startsWith(`${TUS_PATH}/`)) {
        ctx.req.resume();
        return detail(ctx.res, 404, 'Not Found');
      }
      return next();
    }
    let id;
    try {
      id = decodeURIComponent(m[1]);
    } catch {
      id = m[1];
    }
    if (method === 'HEAD' || method === 'PATCH' || method === 'DELETE') {
      if (!Store.validId(id)) {
        ctx.req.resume();
        return detail(ctx.res, 404, method === 'HEAD' ? 'Not Found' : 'Upload not found');
      }
      if (method === 'HEAD') return head(ctx, id);
      if (method === 'PATCH') return patch(ctx, id);
      return del(ctx, id);
    }
    return notAllowed(ctx, 'HEAD, PATCH, DELETE');
  };

  // What the faults stage needs of a store: { offset } of an upload, and
  // removing one.
  const faultStore = {
    getUpload: async (id) => {
      const info = Store.validId(id) && store.exists(id) ? store.info(id) : null;
      if (!info) throw new Error('not found');
      return { offset: info.offset };
    },
    remove: async (id) => store.remove(id),
  };

  // Fault answers, in FastAPI's shape.
  const faultReply = (ctx, status, text, headers = {}) => {
    ctx.req.resume();
    detail(ctx.res, status, text, headers);
  };

  return { stage, pickUp, faultStore, faultReply };
}
