// The bare sink of scripts/bench.sh (bench/sink.mjs).
//
// The least TUS 1.0.0 server tusfs can upload to: Node's http module and
// nothing else, so that the wire row measures the client against a server
// that costs next to nothing (the @tus/server discard store still runs
// every chunk through its stream machinery). It keeps each upload's
// offset, length and metadata in memory, counts PATCH bodies and throws
// their bytes away. Nothing survives a restart.
//
//   OPTIONS  Tus-Version 1.0.0, Tus-Extension creation,
//            creation-defer-length, termination (204)
//   POST     Upload-Length or Upload-Defer-Length: 1 (400 without either),
//            Upload-Metadata kept as sent; 201 + Location, the endpoint's
//            URL (from Host) and an id. A body is refused (400): no
//            creation-with-upload.
//   HEAD     Upload-Offset, and Upload-Length or Upload-Defer-Length: 1
//   PATCH    Upload-Offset must equal the upload's (409 otherwise, body
//            drained); Upload-Length declares a deferred length once (400
//            for another value). The body is counted, 204 with the new
//            Upload-Offset. Bytes past the length: 400 after the body. A
//            body cut short still moves the offset by what arrived, as a
//            real store does.
//   DELETE   forgets the upload (204); unknown ids are 404 everywhere.
//
// tusfs creates an upload with a deferred length while the file is still
// being written (once a whole chunk is spooled) and declares the length on
// the first PATCH after the last close: without creation-defer-length it
// would wait for the close, and writing and uploading would not overlap.
// Its PATCHes of 1 MiB and more ask for 100-continue, which Node answers
// by itself when nothing listens for 'checkContinue'.
//
// Usage: node sink.mjs [--port N] [--port-file FILE]
// Prints "listening on http://127.0.0.1:PORT/uploads/files/"; the port
// file gets the port once it is bound. SIGTERM or SIGINT exits 0.

import fs from 'node:fs';
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';

const PREFIX = '/uploads/files/';
const { values: opts } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    'port-file': { type: 'string' },
  },
});

// id -> { offset, length (-1: deferred), metadata }
const uploads = new Map();

const TUS = { 'Tus-Resumable': '1.0.0' };

function answer(res, status, headers = {}, text = '') {
  const length = status === 204 ? {} : { 'Content-Length': Buffer.byteLength(text) };
  res.writeHead(status, { ...TUS, ...headers, ...length });
  res.end(text);
}

// Answers once the body is read and thrown away, so a kept-alive
// connection stays in step whatever we refused.
function drainThen(req, fn) {
  req.on('end', fn);
  req.resume();
}

function decimal(v) {
  return typeof v === 'string' && /^[0-9]{1,15}$/.test(v) ? Number(v) : -1;
}

function create(req, res) {
  const length = decimal(req.headers['upload-length']);
  const deferred = req.headers['upload-defer-length'] === '1';
  if ((length < 0) === !deferred) {
    drainThen(req, () => answer(res, 400, {}, 'need Upload-Length or Upload-Defer-Length: 1\n'));
    return;
  }
  if (decimal(req.headers['content-length']) > 0) {
    drainThen(req, () => answer(res, 400, {}, 'no creation-with-upload here\n'));
    return;
  }
  const id = randomBytes(16).toString('hex');
  uploads.set(id, { offset: 0, length: deferred ? -1 : length, metadata: req.headers['upload-metadata'] });
  // Absolute, as @tus/server's, so the benchmark's curl can use it as is.
  drainThen(req, () => answer(res, 201, { Location: `http://${req.headers.host}${PREFIX}${id}` }));
}

function lengthHeaders(u) {
  return u.length < 0 ? { 'Upload-Defer-Length': '1' } : { 'Upload-Length': String(u.length) };
}

function patch(req, res, u) {
  const offset = decimal(req.headers['upload-offset']);
  if (req.headers['content-type'] !== 'application/offset+octet-stream') {
    drainThen(req, () => answer(res, 415));
    return;
  }
  if (offset !== u.offset) {
    drainThen(req, () => answer(res, 409, { 'Upload-Offset': String(u.offset) }));
    return;
  }
  if (req.headers['upload-length'] !== undefined) {
    const length = decimal(req.headers['upload-length']);
    if (length < 0 || (u.length >= 0 && length !== u.length) || length < u.offset) {
      drainThen(req, () => answer(res, 400, {}, 'bad Upload-Length\n'));
      return;
    }
    u.length = length;
  }
  let read = 0;
  req.on('data', (chunk) => {
    read += chunk.length;
  });
  req.on('end', () => {
    u.offset += read;
    if (u.length >= 0 && u.offset > u.length) {
      u.offset -= read;
      answer(res, 400, {}, 'past Upload-Length\n');
      return;
    }
    answer(res, 204, { 'Upload-Offset': String(u.offset) });
  });
  req.on('aborted', () => {
    u.offset += read;
  });
}

function serve(req, res) {
  if (req.method === 'OPTIONS') {
    drainThen(req, () =>
      answer(res, 204, {
        'Tus-Version': '1.0.0',
        'Tus-Extension': 'creation,creation-defer-length,termination',
      }),
    );
    return;
  }
  if (req.headers['tus-resumable'] !== '1.0.0') {
    drainThen(req, () => answer(res, 412, { 'Tus-Version': '1.0.0' }));
    return;
  }
  const path = req.url.split('?')[0];
  if (req.method === 'POST' && (path === PREFIX || path + '/' === PREFIX)) {
    create(req, res);
    return;
  }
  const u = path.startsWith(PREFIX) ? uploads.get(path.slice(PREFIX.length)) : undefined;
  if (!u) {
    drainThen(req, () => answer(res, 404));
    return;
  }
  switch (req.method) {
    case 'HEAD':
      drainThen(req, () => {
        res.writeHead(200, {
          ...TUS,
          'Upload-Offset': String(u.offset),
          ...lengthHeaders(u),
          'Cache-Control': 'no-store',
        });
        res.end();
      });
      return;
    case 'PATCH':
      patch(req, res, u);
      return;
    case 'DELETE':
      uploads.delete(path.slice(PREFIX.length));
      drainThen(req, () => answer(res, 204));
      return;
    default:
      drainThen(req, () => answer(res, 405));
  }
}

const server = http.createServer({ keepAliveTimeout: 60000 }, serve);
// A 2 GiB PATCH takes seconds; Node's default would cut it at 5 minutes
// only, but a loaded machine should not be the one to find out.
server.requestTimeout = 0;
server.listen(Number(opts.port), '127.0.0.1', () => {
  const { port } = server.address();
  if (opts['port-file']) {
    const tmp = `${opts['port-file']}.tmp.${process.pid}`;
    fs.writeFileSync(tmp, `${port}\n`);
    fs.renameSync(tmp, opts['port-file']);
  }
  process.stdout.write(`listening on http://127.0.0.1:${port}${PREFIX}\n`);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}
