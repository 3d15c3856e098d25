// slowcopy.mjs SRC DST BYTES_PER_SECOND: copies SRC to DST in 1 MiB writes
// through one open descriptor, paced, so a test can act while the writer
// is still writing (cp would finish first).
import fs from 'node:fs';

const [src, dst, rate] = process.argv.slice(2);
const block = 1024 * 1024;
const buf = Buffer.alloc(block);
const input = fs.openSync(src, 'r');
const output = fs.openSync(dst, 'w');
const start = Date.now();
let done = 0;
for (;;) {
  const n = fs.readSync(input, buf, 0, block, done);
  if (n === 0) break;
  fs.writeSync(output, buf, 0, n, done);
  done += n;
  const ahead = (done / Number(rate)) * 1000 - (Date.now() - start);
  if (ahead > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ahead);
}
fs.closeSync(output);
