// tusfs reference TUS backend (tests/backend/server.js).
//
// This file owns the HTTP server the tusfs tests upload to: it serves TUS
// 1.0.0 at /uploads/files/ with the official @tus/server + @tus/file-store,
// and around it imitates the parts of the real service (BACKEND.md) that a
// client must cope with: Bearer-token auth (401 + WWW-Authenticate), the
// Cloudflare request-body limit (413 before or instead of reading the
// body) and a per-request JSON log the tests can assert on.
//
// Every request runs through a small pipeline of stages (see PIPELINE
// below), each `async (ctx, next) => {}`, in the style of Koa middleware:
//
//   requestLog -> auth -> bodyGate -> router (-> tus)
//
// requestLog comes first so that requests refused by auth or bodyGate are
// logged too. To add a route (the transcription task API) or a fault
// injection switch, write another stage and put it in PIPELINE.
//
// Usage: node server.js --dir DIR [--port N] [--host 127.0.0.1]
//          [--body-limit BYTES] [--token TOKEN | --token-file FILE]
//          [--max-size BYTES] [--log FILE] [--port-file FILE]
//          [--expiration-ms MS] [--relative-location] [--without EXT,...]

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { Readable } from 'node:stream';
import { parseArgs } from 'node:util';

import { FileStore } from '@tus/file-store';
import { Server as TusServer } from '@tus/server';

const TUS_PATH = '/uploads/files';

// ---------------------------------------------------------------------------
// Command line

const USAGE = `usage: node server.js --dir DIR [--port N] [--host 127.0.0.1]
         [--body-limit BYTES] [--token TOKEN | --token-file FILE]
         [--max-size BYTES] [--log FILE] [--port-file FILE]
         [--expiration-ms MS] [--relative-location] [--without EXT,...]`;

function die(msg) {
  process.stderr.write(`server.js: ${msg}\n${USAGE}\n`);
  process.exit(2);
}

function parseCount(name, value, { min = 0 } = {}) {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value)) || Number(value) < min) {
    die(`--${name} wants an integer >= ${min}, got ${JSON.stringify(value)}`);
  }
  return Number(value);
}

// --without EXT[,EXT...]: extensions to withhold, as a server lacking them.
const WITHHOLDABLE = ['creation-defer-length', 'creation-with-upload', 'termination'];

function parseWithout(value) {
  const list = value === undefined ? [] : value.split(',').filter(Boolean);
  for (const ext of list) {
    if (!WITHHOLDABLE.includes(ext)) die(`--without takes ${WITHHOLDABLE.join(', ')}`);
  }
  return new Set(list);
}

function parseConfig(argv) {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        dir: { type: 'string' },
        port: { type: 'string', default: '0' },
        host: { type: 'string', default: '127.0.0.1' },
        'body-limit': { type: 'string' },
        token: { type: 'string' },
        'token-file': { type: 'string' },
        'max-size': { type: 'string' },
        log: { type: 'string' },
        'port-file': { type: 'string' },
        'expiration-ms': { type: 'string' },
        'relative-location': { type: 'boolean', default: false },
        without: { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    die(err.message);
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  if (!values.dir) die('--dir is required');
  if (values.token !== undefined && values['token-file'] !== undefined) {
    die('give --token or --token-file, not both');
  }
  let token = values.token;
  if (values['token-file'] !== undefined) {
    try {
      token = fs.readFileSync(values['token-file'], 'utf8').trim();
    } catch (err) {
      die(`cannot read --token-file: ${err.message}`);
    }
  }
  if (token !== undefined && token === '') die('the token is empty');
  const port = parseCount('port', values.port);
  if (port > 65535) die('--port out of range');
  return {
    dir: path.resolve(values.dir),
    port,
    host: values.host,
    bodyLimit: parseCount('body-limit', values['body-limit']),
    token,
    maxSize: parseCount('max-size', values['max-size'], { min: 1 }),
    logFile: values.log,
    portFile: values['port-file'],
    expirationMs: parseCount('expiration-ms', values['expiration-ms']) ?? 0,
    relativeLocation: values['relative-location'],
    without: parseWithout(values.without),
  };
}

// ---------------------------------------------------------------------------
// Request objects: count body bytes as the HTTP parser delivers them.
//
// Node's HTTP parser hands every body chunk to IncomingMessage#push(), so
// overriding push() counts exactly what the server received, whoever ends
// up reading the stream (@tus/server, our 413 drain, or nobody), without
// adding a consumer that would change flowing/paused mode.

class CountingIncomingMessage extends http.IncomingMessage {
  constructor(socket) {
    super(socket);
    this.bodyBytes = 0;
  }

  push(chunk, encoding) {
    if (chunk !== null && chunk !== undefined) {
      this.bodyBytes += typeof chunk === 'string' ? Buffer.byteLength(chunk, encoding) : chunk.length;
    }
    return super.push(chunk, encoding);
  }
}

// A stand-in request carrying a body we already read into memory (chunked
// bodies under --body-limit). It has what @tus/server's Node adapter (srvx)
// reads from a request: method, url, headers, rawHeaders, socket.
function replayRequest(req, chunks) {
  const body = Readable.from(chunks, { objectMode: false });
  return Object.assign(body, {
    method: req.method,
    url: req.url,
    headers: req.headers,
    rawHeaders: req.rawHeaders,
    httpVersion: req.httpVersion,
    httpVersionMajor: req.httpVersionMajor,
    httpVersionMinor: req.httpVersionMinor,
    socket: req.socket,
    complete: true,
  });
}

// ---------------------------------------------------------------------------
// Small helpers

function headerValue(req, name) {
  const v = req.headers[name];
  return v === undefined ? null : Array.isArray(v) ? v.join(', ') : v;
}

// Integer-looking header values become numbers, anything else stays text.
function headerNumber(req, name) {
  const v = headerValue(req, name);
  if (v === null) return null;
  const t = v.trim();
  return /^\d+$/.test(t) && Number.isSafeInteger(Number(t)) ? Number(t) : v;
}

function sendText(res, status, text, headers = {}) {
  const body = Buffer.from(text, 'utf8');
  res.writeHead(status, {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': body.length,
    ...headers,
  });
  res.end(body);
}

function sendJson(res, status, value, headers = {}) {
  const body = Buffer.from(JSON.stringify(value), 'utf8');
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': body.length,
    ...headers,
  });
  res.end(body);
}

// Refuse a request without reading its body. If the client is waiting for
// 100 Continue it will not send the body at all, so the connection cannot
// be reused and we close it; otherwise we read and discard the body so the
// client, still sending, gets to read our answer.
function refuse(ctx, send) {
  const { req, res } = ctx;
  if (ctx.expectContinue) {
    res.setHeader('Connection', 'close');
  } else {
    req.resume();
  }
  send();
}

function errorText(err) {
  return err && err.stack ? err.stack : String(err);
}

// ---------------------------------------------------------------------------
// Pipeline stages. ctx = { config, req, res, url, expectContinue, tusReq }

// Appends one JSON line per request to --log as the response head goes
// out, so the line is on disk before the client can see the answer (or,
// if the connection closes with no answer, then, with status null).
// body_bytes is what the server had received by then: the whole body for
// anything @tus/server answers (it reads the body before it replies),
// possibly less for a request refused early (401/413 without
// Expect: 100-continue) whose body was still arriving.
function requestLog(ctx, next) {
  const { config, req, res } = ctx;
  if (!config.logFile) return next();

  const entry = {
    method: req.method,
    path: ctx.url.pathname,
    status: null,
    body_bytes: 0,
    content_length: headerNumber(req, 'content-length'),
    upload_offset: headerNumber(req, 'upload-offset'),
    upload_length: headerNumber(req, 'upload-length'),
    defer_length: headerNumber(req, 'upload-defer-length'),
    auth: req.headers.authorization !== undefined, // never the value
    // The client's port: requests sharing it came over one connection.
    conn: req.socket.remotePort,
  };
  let written = false;
  const write = (status) => {
    if (written) return;
    written = true;
    entry.status = status;
    entry.body_bytes = req.bodyBytes ?? 0;
    try {
      fs.appendFileSync(config.logFile, `${JSON.stringify(entry)}\n`);
    } catch (err) {
      process.stderr.write(`server.js: cannot write log: ${err.message}\n`);
    }
  };
  // Every response head passes through writeHead (Node's implicit headers
  // call it too); it only buffers the head, nothing is sent yet.
  const writeHead = res.writeHead;
  res.writeHead = function (...args) {
    const ret = writeHead.apply(this, args);
    write(this.statusCode);
    return ret;
  };
  res.once('close', () => write(res.headersSent ? res.statusCode : null));
  return next();
}

// Every request, OPTIONS included, must carry Authorization: Bearer TOKEN.
function auth(ctx, next) {
  const { config, req, res } = ctx;
  if (config.token === undefined) return next();
  const m = /^Bearer +(\S+) *$/i.exec(headerValue(req, 'authorization') ?? '');
  const given = Buffer.from(m ? m[1] : '', 'utf8');
  const want = Buffer.from(config.token, 'utf8');
  if (given.length === want.length && crypto.timingSafeEqual(given, want)) return next();
  refuse(ctx, () =>
    sendJson(res, 401, { detail: 'Not authenticated' }, {
      'WWW-Authenticate': 'Bearer realm="whisperx"',
    }),
  );
}

// Admits the request body: imitates the proxy body limit (413, upload not
// touched) and answers Expect: 100-continue for requests it lets through.
async function bodyGate(ctx, next) {
  const { config, req, res } = ctx;
  const limit = config.bodyLimit;
  const tooLarge = () =>
    sendText(res, 413, `413 Payload Too Large: request body over ${limit} bytes\n`);

  const cl = headerValue(req, 'content-length');
  if (limit !== undefined && cl !== null && /^\d+$/.test(cl.trim()) && Number(cl) > limit) {
    refuse(ctx, tooLarge);
    return;
  }
  if (ctx.expectContinue) res.writeContinue();

  // Chunked body (no Content-Length): the size is only known by reading it.
  // Read it all (at most limit bytes) before anything reaches the upload.
  // Over the limit: answer 413 at once and keep discarding the rest.
  if (limit !== undefined && cl === null && req.headers['transfer-encoding'] !== undefined) {
    const chunks = await readUpTo(req, limit);
    if (chunks === 'aborted') return; // client went away; nothing was stored
    if (chunks === 'too-large') {
      tooLarge();
      return;
    }
    ctx.tusReq = replayRequest(req, chunks);
  }
  return next();
}

// Resolves to the body's chunks, 'too-large' as soon as more than limit
// bytes arrived (the stream keeps flowing so the rest is discarded), or
// 'aborted'.
function readUpTo(req, limit) {
  return new Promise((resolve) => {
    const chunks = [];
    let size = 0;
    let settled = false;
    const settle = (v) => {
      if (settled) return;
      settled = true;
      resolve(v);
    };
    req.on('data', (chunk) => {
      if (settled) return;
      size += chunk.length;
      if (size > limit) {
        chunks.length = 0;
        settle('too-large');
      } else {
        chunks.push(chunk);
      }
    });
    req.once('end', () => settle(chunks));
    req.once('error', () => settle('aborted'));
    req.once('close', () => settle(req.complete ? chunks : 'aborted'));
  });
}

// Plays a server without some extensions (--without): they vanish from
// Tus-Extension, and requests that use them are refused as such a server
// would refuse them.
function extensionGate(ctx, next) {
  const { config, req, res } = ctx;
  const without = config.without;
  if (without.size === 0) return next();

  const refuse = (status, text) => sendText(res, status, text);
  if (req.method === 'POST' && without.has('creation-defer-length') &&
      req.headers['upload-defer-length'] !== undefined) {
    return refuse(400, 'Upload-Length header required\n');
  }
  if (req.method === 'POST' && without.has('creation-with-upload') &&
      Number(req.headers['content-length'] ?? 0) > 0) {
    return refuse(400, 'creation-with-upload is not supported\n');
  }
  if (req.method === 'DELETE' && without.has('termination')) {
    return refuse(405, 'Method not allowed\n');
  }
  const filter = (v) => String(v).split(',').map((e) => e.trim())
    .filter((e) => !without.has(e)).join(',');
  const writeHead = res.writeHead;
  res.writeHead = function (status, ...rest) {
    if (this.hasHeader('tus-extension')) {
      this.setHeader('tus-extension', filter(this.getHeader('tus-extension')));
    }
    const headers = rest[rest.length - 1];
    if (headers && typeof headers === 'object' && !Array.isArray(headers)) {
      for (const k of Object.keys(headers)) {
        if (k.toLowerCase() === 'tus-extension') headers[k] = filter(headers[k]);
      }
    } else if (Array.isArray(headers)) {
      for (let i = 0; i + 1 < headers.length; i += 2) {
        if (String(headers[i]).toLowerCase() === 'tus-extension') headers[i + 1] = filter(headers[i + 1]);
      }
    }
    return writeHead.call(this, status, ...rest);
  };
  return next();
}

// Sends TUS requests to @tus/server; everything else is 404 for now.
function makeRouter(tus) {
  return async (ctx, next) => {
    const p = ctx.url.pathname;
    if (p === TUS_PATH || p.startsWith(`${TUS_PATH}/`)) {
      await tus.handle(ctx.tusReq ?? ctx.req, ctx.res);
      return;
    }
    await next();
  };
}

function notFound(ctx) {
  sendText(ctx.res, 404, 'Not found\n');
}

function compose(stages) {
  return (ctx) => {
    const run = (i) => (i < stages.length ? stages[i](ctx, () => run(i + 1)) : undefined);
    return Promise.resolve(run(0));
  };
}

// ---------------------------------------------------------------------------
// Main

function main() {
  const config = parseConfig(process.argv.slice(2));
  fs.mkdirSync(config.dir, { recursive: true });

  const tus = new TusServer({
    path: TUS_PATH,
    datastore: new FileStore({
      directory: config.dir,
      expirationPeriodInMilliseconds: config.expirationMs,
    }),
    maxSize: config.maxSize,
    relativeLocation: config.relativeLocation,
    onResponseError: (_req, err) => {
      if (!err || !err.status_code || err.status_code >= 500) {
        process.stderr.write(`server.js: tus error: ${errorText(err)}\n`);
      }
      return undefined; // keep @tus/server's own status and body
    },
  });

  const PIPELINE = [requestLog, auth, bodyGate, extensionGate, makeRouter(tus), notFound];
  const handle = compose(PIPELINE);

  const onRequest = (req, res, expectContinue) => {
    let url;
    try {
      url = new URL(req.url, 'http://localhost');
    } catch {
      url = new URL('http://localhost/');
    }
    const ctx = { config, req, res, url, expectContinue, tusReq: null };
    handle(ctx).catch((err) => {
      process.stderr.write(`server.js: ${req.method} ${url.pathname}: ${errorText(err)}\n`);
      if (!res.headersSent) {
        res.setHeader('Connection', 'close');
        sendText(res, 500, 'Internal Server Error\n');
      } else {
        res.destroy();
      }
    });
  };

  const server = http.createServer({ IncomingMessage: CountingIncomingMessage });
  server.on('request', (req, res) => onRequest(req, res, false));
  // With a 'checkContinue' listener Node leaves 100 Continue to us: bodyGate
  // sends it once the request passed auth and the size check.
  server.on('checkContinue', (req, res) => onRequest(req, res, true));
  server.requestTimeout = 0; // big uploads over slow FUSE writes: no cap
  server.on('error', (err) => {
    process.stderr.write(`server.js: ${err.message}\n`);
    process.exit(1);
  });

  server.listen(config.port, config.host, () => {
    const { port } = server.address();
    const host = config.host.includes(':') ? `[${config.host}]` : config.host;
    if (config.portFile) {
      const tmp = `${config.portFile}.tmp.${process.pid}`;
      fs.writeFileSync(tmp, `${port}\n`);
      fs.renameSync(tmp, config.portFile);
    }
    process.stdout.write(`listening on http://${host}:${port}\n`);
  });

  const shutdown = () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}

main();
