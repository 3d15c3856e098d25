#!/usr/bin/env node
// tusfs reference backend: a deterministic test recording
// (tests/backend/mkmedia.mjs).
//
// Usage: node mkmedia.mjs OUT [--seconds N] [--seed S]
//
// Writes OUT: a 16 kHz mono 16-bit PCM WAV (44-byte header) of N seconds
// (default 5; decimals allowed, rounded to whole samples) whose samples
// depend on --seed S (an integer 0..4294967295, default 1) and nothing
// else: no clock, no Math.random, and no Math.sin either (its last bit may
// differ between engines): only integer arithmetic and IEEE +, -, *, /,
// which give the same result everywhere. So the same N and S give a
// byte-identical file on any machine (the tests pin its sha256).
//
// It sounds vaguely like speech: "syllables" of 80..400 ms, each a buzzing
// tone (100..250 Hz and three harmonics, gliding a little) under a
// rise-and-fall envelope, with pauses between words and a faint hiss.

import fs from 'node:fs';
import { parseArgs } from 'node:util';

import { mulberry32 } from './prng.js';

const RATE = 16000;
const USAGE = 'usage: node mkmedia.mjs OUT [--seconds N] [--seed S]';

function die(msg) {
  process.stderr.write(`mkmedia.mjs: ${msg}\n${USAGE}\n`);
  process.exit(2);
}


// A sine of a uint32 phase (a full turn is 2^32), from a parabola and one
// refinement step: within 0.1% of sin, exact IEEE arithmetic only.
function sine(phase) {
  const x = (phase >>> 0) / 2147483648 - 1; // -1 .. 1 (= -pi .. pi)
  const y = 4 * x * (1 - Math.abs(x));
  return -(0.225 * (y * Math.abs(y) - y) + y);
}

function samples(seconds, seed) {
  const total = Math.round(seconds * RATE);
  const out = new Int16Array(total);
  const rnd = mulberry32(seed);
  const unit = () => rnd() / 4294967296;
  let pos = 0;
  while (pos < total) {
    const r = unit();
    if (r < 0.22) {
      // A pause between words: 60..450 ms of near silence.
      const len = Math.floor((0.06 + 0.39 * unit()) * RATE);
      for (let i = 0; i < len && pos < total; i++, pos++) {
        out[pos] = ((rnd() >>> 24) & 0x1f) - 16;
      }
      continue;
    }
    const len = Math.floor((0.08 + 0.32 * unit()) * RATE);
    const f0 = 100 + 150 * unit();
    const glide = (unit() - 0.5) * 0.4; // +-20% over the syllable
    const amp = 3000 + 9000 * unit();
    const h = [1, 0.3 + 0.5 * unit(), 0.1 + 0.4 * unit(), 0.05 + 0.2 * unit()];
    const hsum = h[0] + h[1] + h[2] + h[3];
    let phase = 0; // uint32 turns of the fundamental
    for (let i = 0; i < len && pos < total; i++, pos++) {
      const t = i / len;
      const f = f0 * (1 + glide * t);
      phase = (phase + Math.floor((f / RATE) * 4294967296)) >>> 0;
      let v = 0;
      for (let k = 0; k < 4; k++) v += h[k] * sine(Math.imul(phase, k + 1) >>> 0);
      // Rise over the first 20%, fall over the rest.
      const env = t < 0.2 ? t / 0.2 : (1 - t) / 0.8;
      const hiss = ((rnd() >>> 22) & 0x3ff) - 512;
      const s = Math.round((amp * env * v) / hsum) + (hiss >> 3);
      out[pos] = s > 32767 ? 32767 : s < -32768 ? -32768 : s;
    }
  }
  return out;
}

function wav(pcm) {
  const data = pcm.length * 2;
  const buf = Buffer.alloc(44 + data);
  buf.write('RIFF', 0, 'latin1');
  buf.writeUInt32LE(36 + data, 4);
  buf.write('WAVE', 8, 'latin1');
  buf.write('fmt ', 12, 'latin1');
  buf.writeUInt32LE(16, 16); // fmt chunk size
  buf.writeUInt16LE(1, 20); // PCM
  buf.writeUInt16LE(1, 22); // mono
  buf.writeUInt32LE(RATE, 24);
  buf.writeUInt32LE(RATE * 2, 28); // byte rate
  buf.writeUInt16LE(2, 32); // block align
  buf.writeUInt16LE(16, 34); // bits per sample
  buf.write('data', 36, 'latin1');
  buf.writeUInt32LE(data, 40);
  for (let i = 0; i < pcm.length; i++) buf.writeInt16LE(pcm[i], 44 + 2 * i);
  return buf;
}

function main() {
  let parsed;
  try {
    parsed = parseArgs({
      args: process.argv.slice(2),
      options: {
        seconds: { type: 'string', default: '5' },
        seed: { type: 'string', default: '1' },
        help: { type: 'boolean', short: 'h', default: false },
      },
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    die(err.message);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  if (positionals.length !== 1) die('give one OUT file');
  if (!/^(\d+(\.\d*)?|\.\d+)$/.test(values.seconds) || Number(values.seconds) > 3600) {
    die(`--seconds wants a number from 0 to 3600, got ${JSON.stringify(values.seconds)}`);
  }
  if (!/^\d+$/.test(values.seed) || Number(values.seed) > 0xffffffff) {
    die(`--seed wants an integer 0..4294967295, got ${JSON.stringify(values.seed)}`);
  }
  const out = wav(samples(Number(values.seconds), Number(values.seed)));
  const tmp = `${positionals[0]}.tmp.${process.pid}`;
  fs.writeFileSync(tmp, out);
  fs.renameSync(tmp, positionals[0]);
}

main();
