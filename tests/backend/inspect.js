// tusfs reference backend: inspect.js lists what server.js stored.
//
// Usage: node inspect.js [--json] [--no-hash] DIR
//
// --no-hash skips hashing (sha256 is "-"), for cheap polling.
//
// @tus/file-store keeps each upload as DIR/<id> (the bytes received so far)
// and DIR/<id>.json (the upload info written at creation: id, size,
// metadata, creation_date; "size" is added when a deferred length is
// declared). The JSON's "offset" is not kept up to date; like the store
// itself we take the offset from the size of DIR/<id>.
//
// server.js --profile tuspyserver keeps tuspyserver's layout instead:
// DIR/<id> and DIR/<id>.info (JSON: metadata, size, offset, created_at,
// ...). There the offset is the info's (what HEAD answers; the data file
// can be longer after a refused PATCH, as tuspyserver writes in append
// mode), and sha256 is that of the whole data file. An upload whose file
// the service hook took (moved to DIR/.taken/<id><ext>) is still listed,
// with the taken file's size as offset and its hash.
//
// Default output: one line per upload, tab-separated, sorted by filename
// then id:
//
//   id  size  offset  sha256  filename  filetype  taskId  relativePath
//
// size is the declared Upload-Length or "-" while deferred; metadata values
// are decoded; "-" stands for anything missing (also offset and sha256 when
// DIR/<id> is gone). Tab, newline, carriage return and backslash inside a
// value are written as \t \n \r \\ so that every upload stays on one line;
// use --json for exact values.
//
// --json prints a JSON array of objects instead: { id, size (null while
// deferred), offset, sha256, filename, filetype, taskId, relativePath (null
// when missing), metadata (all keys), creation_date, layout ("tus-node" or
// "tuspyserver"), taken (the taken file's path relative to DIR, or null) }.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

const USAGE = 'usage: node inspect.js [--json] [--no-hash] DIR';

function sha256File(file) {
  const hash = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(1 << 20);
    let n;
    while ((n = fs.readSync(fd, buf, 0, buf.length, null)) > 0) {
      hash.update(buf.subarray(0, n));
    }
  } finally {
    fs.closeSync(fd);
  }
  return hash.digest('hex');
}

// The file the service hook moved upload id's bytes to, relative to
// dir, or null.
function takenFile(dir, id) {
  let names;
  try {
    names = fs.readdirSync(path.join(dir, '.taken'));
  } catch {
    return null;
  }
  const name = names.find((n) => n === id || (n.startsWith(`${id}.`) && n.length > id.length + 1));
  return name === undefined ? null : path.join('.taken', name);
}

// The size of a regular file, or null when there is none.
function fileSize(file) {
  try {
    const st = fs.statSync(file);
    return st.isFile() ? st.size : null;
  } catch (err) {
    if (err.code !== 'ENOENT') throw err;
    return null;
  }
}

function loadUpload(dir, id, layout, hash) {
  const tuspy = layout === 'tuspyserver';
  const info = JSON.parse(fs.readFileSync(path.join(dir, `${id}${tuspy ? '.info' : '.json'}`), 'utf8'));
  const metadata = info.metadata && typeof info.metadata === 'object' ? info.metadata : {};
  const meta = (key) => (typeof metadata[key] === 'string' ? metadata[key] : null);
  let dataFile = path.join(dir, id);
  let size = fileSize(dataFile);
  let offset = size;
  let taken = null;
  if (tuspy) {
    if (size === null) {
      taken = takenFile(dir, id);
      if (taken !== null) {
        dataFile = path.join(dir, taken);
        size = fileSize(dataFile);
      }
      offset = size;
    } else if (Number.isInteger(info.offset)) {
      offset = info.offset;
    }
  }
  const sha256 = size !== null && hash ? sha256File(dataFile) : null;
  return {
    id,
    size: Number.isInteger(info.size) ? info.size : null,
    offset,
    sha256,
    filename: meta('filename'),
    filetype: meta('filetype'),
    taskId: meta('taskId'),
    relativePath: meta('relativePath'),
    metadata,
    creation_date: info.creation_date ?? info.created_at ?? null,
    layout,
    taken,
  };
}

function cmp(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}

function field(v) {
  if (v === null || v === undefined) return '-';
  return String(v).replace(/[\\\t\n\r]/g, (c) => ({ '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r' })[c]);
}

function main() {
  const args = process.argv.slice(2);
  const json = args.includes('--json');
  const hash = !args.includes('--no-hash');
  const rest = args.filter((a) => a !== '--json' && a !== '--no-hash');
  if (rest.length !== 1 || rest[0].startsWith('-')) {
    process.stderr.write(`${USAGE}\n`);
    process.exit(2);
  }
  const dir = rest[0];
  let names;
  try {
    names = fs.readdirSync(dir);
  } catch (err) {
    process.stderr.write(`inspect.js: ${err.message}\n`);
    process.exit(1);
  }
  const layouts = { '.json': 'tus-node', '.info': 'tuspyserver' };
  const uploads = names
    .filter((n) => layouts[n.slice(-5)] !== undefined && n.length > 5 && !n.startsWith('.'))
    .map((n) => [n.slice(0, -5), layouts[n.slice(-5)]])
    .map(([id, layout]) => {
      try {
        return loadUpload(dir, id, layout, hash);
      } catch (err) {
        process.stderr.write(`inspect.js: skipping ${id}: ${err.message}\n`);
        return null;
      }
    })
    .filter(Boolean)
    .sort((a, b) => cmp(a.filename ?? '', b.filename ?? '') || cmp(a.id, b.id));

  if (json) {
    process.stdout.write(`${JSON.stringify(uploads, null, 2)}\n`);
    return;
  }
  for (const u of uploads) {
    const cols = [u.id, u.size, u.offset, u.sha256, u.filename, u.filetype, u.taskId, u.relativePath];
    process.stdout.write(`${cols.map(field).join('\t')}\n`);
  }
}

main();
