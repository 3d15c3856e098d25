// The tus-js-client peer of scripts/bench.sh (bench/tusjs.mjs).
//
// Uploads each FILE to ENDPOINT with the official Node.js TUS client, as a
// script using it would: a read stream per file (tus-js-client reads each
// chunk's slice from the path), chunkSize bytes per PATCH, the file name as
// `filename` metadata, and at most PARALLEL files at once. Exits 0 once the
// server has confirmed every byte of every file, 1 on the first failure.
//
// Usage: node tusjs.mjs ENDPOINT CHUNK_SIZE PARALLEL FILE...

import fs from 'node:fs';
import path from 'node:path';
import { Upload } from 'tus-js-client';

const [endpoint, chunkArg, parallelArg, ...files] = process.argv.slice(2);
const chunkSize = Number(chunkArg);
const parallel = Number(parallelArg);
if (!endpoint || !(chunkSize > 0) || !(parallel > 0) || files.length === 0) {
  process.stderr.write('usage: node tusjs.mjs ENDPOINT CHUNK_SIZE PARALLEL FILE...\n');
  process.exit(2);
}

function upload(file) {
  return new Promise((resolve, reject) => {
    const u = new Upload(fs.createReadStream(file), {
      endpoint,
      chunkSize,
      uploadSize: fs.statSync(file).size,
      metadata: { filename: path.basename(file) },
      retryDelays: [],
      onError: reject,
      onSuccess: resolve,
    });
    u.start();
  });
}

let next = 0;
async function lane() {
  while (next < files.length) await upload(files[next++]);
}

try {
  await Promise.all(Array.from({ length: Math.min(parallel, files.length) }, lane));
} catch (err) {
  process.stderr.write(`tusjs.mjs: ${err.message}\n`);
  process.exit(1);
}
