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
//   requestLog -> auth -> bodyGate -> extensionGate -> hostile -> faults
//     -> tasks -> router (-> tus) -> notFound
//
// requestLog comes first so that requests refused by auth or bodyGate are
// logged too. To add a route or a fault injection switch, write another
// stage and put it in PIPELINE. The tasks stage (tasks.js) answers the
// transcription task API, described below.
//
// Fault injection (the faults stage) is deterministic: which requests a
// fault hits depends only on the order PATCH requests arrive in (they are
// decided one at a time, in that order) and on --seed, never on timing or
// Math.random. Every request a fault hits gets "fault": NAME in its log
// line.
//
//   --fail-share P     each PATCH draws one number from a PRNG (mulberry32
//                      seeded with --seed N, default 1); below P (0..1) it
//                      is answered --fail-status (default 500; 423, 429 or
//                      5xx) once its body was read and thrown away: nothing
//                      stored, connection kept. --retry-after S adds
//                      Retry-After: S. Fault "fail".
//   --cut-after N      the first --cut-count K (default 1) PATCHes whose body
//                      is longer than N bytes (and that the upload would
//                      accept: it exists, the offset matches) have exactly
//                      their first N bytes stored, then the connection is
//                      closed with no response; the rest is never read.
//                      Fault "cut".
//   --conflict-once    per upload, the first PATCH with Upload-Offset > 0 is
//                      answered 409, upload untouched. Fault "conflict".
//   --forget-once      once per process, the first PATCH with Upload-Offset
//                      > 0 deletes its upload (data and info file) and is
//                      answered 404; later requests get 404 from @tus/server.
//                      Fault "forget".
//   --expire-once      likewise, but answered 410, and so is every later
//                      request on that id (any method) while this process
//                      runs (after a restart: 404). Faults "expire", "gone".
//   --stall-ms MS      the first --stall-count K (default 1) PATCHes are
//                      stored as usual but their response is held MS ms (and
//                      dropped if the client went away). Fault "stall".
//
// The once-faults only hit uploads that exist. Switches combine; one PATCH
// gets at most one fault, tried in the order gone, fail, forget, expire,
// conflict, cut, stall, and a fault that does not fire is not used up.
//
// Transcription tasks (BACKEND.md section 2; the tasks stage, tasks.js and
// transcribe.js). When an upload receives its last byte and its
// Upload-Metadata has a taskId, a task with that id is created
// --task-delay ms later (until then the task routes answer 404). It first
// checks the file's magic bytes: RIFF....WAVE, ID3 or an MPEG audio frame
// sync (FF Ex), OggS, fLaC, "ftyp" at offset 4 (mp4, m4a, mov) or EBML
// 1A45DFA3 (webm, mkv) is media and is transcribed; anything else (an
// empty file too) becomes a task that failed at once with error
// "unsupported file: not an audio or video format". A second finished
// upload with the same taskId replaces the task (the old one is stopped).
// Tasks survive a restart on the same --dir (DIR/.tasks/, see tasks.js).
//
//   GET /task/{id}            {status, result, metadata, error}
//     status "processing" | "completed" | "failed"; result null until
//     completed, then {"segments": [...], "language": L}; metadata
//     {task_type: "full_process", task_params: null, language: L,
//     file_name (the filename metadata, null without), url: null,
//     callback_url: null, duration (seconds of processing, null until it
//     ended), audio_duration (seconds, null until known), start_time,
//     end_time (null until it ended)}, times as 2026-01-29T18:22:29Z. L is
//     the language metadata, "en" when there is none (auto).
//   GET /tasks/{id}/progress  {identifier, status, progress_percentage,
//     progress_stage, error}; stage "queued" | "transcribing" | "aligning" |
//     "diarizing" | "complete", null for a file refused as non-media.
//   GET /task/all?page=1&page_size=50[&status=S][&q=TEXT]
//     {tasks: [{identifier, status, task_type, file_name, language,
//     audio_duration, duration, start_time, end_time, error}], total,
//     page, page_size}: oldest first; page >= 1, page_size 1..200, else
//     422 with FastAPI's {"detail": [{type, loc, msg, input}]}. Matched
//     before /task/{id}: no task can be read as "all".
//   DELETE /task/{id}/delete  200 {"identifier": id, "message": "Task
//     deleted"}; the task stops and is gone (404 from then on).
//   Unknown task id: 404 {"detail": "Task not found"}. A known route with
//   another method: 405 {"detail": "Method Not Allowed"} and Allow.
//
// The task routes sit behind the same --token as the TUS routes and are
// logged like every request (method, path, status...), so tests can
// count polls.
//
//   --transcriber fake|pocketsphinx   (default fake)
//       fake: a transcript made from the file's bytes alone (sha256 and
//       duration; see transcribe.js): ~1 segment per 4 s (1..500), words
//       from a fixed list with non-ASCII ones, a leading space, times
//       with 3 decimals, segments alternately with and without a speaker,
//       each with "words" [{word, start, end, score, speaker?}]. Stages
//       queued 0 -> transcribing 25 -> aligning 50 -> diarizing 75, each
//       --task-step-ms long, then complete 100 and "completed".
//       pocketsphinx: sox -D turns the file into 16 kHz mono 16-bit WAV
//       in a temp dir (gain normalised to -3 dB), then
//       pocketsphinx_continuous -infile F -time yes -logfn LOG with
//       Debian's en-us model (-hmm, -lm, -dict under
//       /usr/share/pocketsphinx/model/en-us); one segment per utterance
//       (split at pauses of 1 s+), words with times and scores. Stages
//       queued (at least one step, and until the previous task is done:
//       one at a time) -> transcribing 25 -> complete 100; a failing sox or
//       pocketsphinx fails the task with its message.
//   --task-delay MS      a finished upload's task appears MS ms later
//                        (default 300).
//   --task-step-ms MS    length of each progress stage (default 200).
//   --task-fail [MESSAGE]  every media task goes queued -> transcribing,
//                        then fails with MESSAGE (default "transcription
//                        failed: the model could not decode the audio"),
//                        result null. A MESSAGE starting with "-" needs
//                        --task-fail=MESSAGE.
//   --task-slow-ms MS    every task route answer (404, 405 and 422 too) is
//                        held MS ms first, then computed; dropped if the
//                        client left. Fault "slow".
//   --task-garbage KIND  GET /task/{id} of an existing task answers
//                        garbage, the first --task-garbage-count N (default:
//                        every) answers per task, then the real answer. 404s
//                        for tasks that do not exist yet do not count; the
//                        count starts over for a replaced task and after a
//                        restart. Fault "garbage". KIND:
//       html       200 text/html: a proxy's HTML error page.
//       truncated  200 application/json: the real answer's first half
//                  (bytes, with a matching Content-Length).
//       types      200 JSON: status a number (1), result a string (the real
//                  result as JSON text), metadata an array, error null.
//       huge       200 JSON of exactly 50 MiB, streamed: {"padding":
//                  "xxx...", "status": "processing", "result": null,
//                  "metadata": {...real}, "error": null}.
//       segments   200 JSON: status "completed", a result whose segments
//                  partly miss "end", "text" or "start".
//
// Usage: node server.js --dir DIR [--port N] [--host 127.0.0.1]
//          [--body-limit BYTES] [--token TOKEN | --token-file FILE]
//          [--max-size BYTES] [--log FILE] [--port-file FILE]
//          [--expiration-ms MS] [--relative-location] [--without EXT,...]
//          [--seed N] [--fail-share P [--fail-status CODE] [--retry-after S]]
//          [--cut-after N [--cut-count K]] [--conflict-once] [--forget-once]
//          [--expire-once] [--stall-ms MS [--stall-count K]]
//          [--transcriber fake|pocketsphinx] [--task-delay MS]
//          [--task-step-ms MS] [--task-fail [MESSAGE]] [--task-slow-ms MS]
//          [--task-garbage KIND [--task-garbage-count N]]
//          [--store file|discard] [--hostile KIND [--hostile-count K]]
//          [--tls-cert FILE --tls-key FILE]
//          [--profile tus-node|tuspyserver [--service-hook [--decode-ms MS]]
//           [--lock-wait-ms MS]]
//
// --store discard keeps no bytes (discard-store.js): uploads are counted
// and thrown away, for benchmarks that measure the client and the wire.
// Finished uploads then get no task, as there is nothing to transcribe.
//
// --hostile KIND answers like no honest server would (hostile.js lists the
// kinds). --tls-cert/--tls-key serve https with that PEM certificate and
// key instead of http.
//
// Profiles. --profile tus-node (the default) is everything above:
// @tus/server behind the stages. --profile tuspyserver answers the TUS
// routes as tuspyserver 4.2.3 does (BACKEND.md 1b; tuspy.js), the server
// the real service runs, which a client that works against @tus/server
// can still fail on:
//   - OPTIONS /uploads/files/: 204, Tus-Version 1.0.0, Tus-Extension
//     creation,creation-defer-length,creation-with-upload,expiration,
//     termination,concatenation, Tus-Max-Size --max-size (default
//     5368709120). A wrong Tus-Resumable is 412; a missing one is fine
//     here and only here: every other request without it gets 412
//     {"detail": "Unsupported version. Expected 1.0.0"}. Errors are
//     FastAPI's JSON: {"detail": TEXT}, 422 {"detail": [{type, loc, msg,
//     input}]} for a header that is missing or not an integer.
//   - POST: Upload-Length, or Upload-Defer-Length: 1 (another value: 400),
//     or neither (accepted; HEAD of such an upload then drops the
//     connection unanswered, as tuspyserver's own HTTP layer does). 201
//     with an absolute Location (--relative-location: /uploads/files/ID)
//     and Upload-Expires. creation-with-upload: a body with a
//     Content-Length is read whole and stored, unchecked (a client gone
//     mid-body leaves the upload empty). Upload-Concat partial and
//     final;URL... (parts complete, copied inside the request, then
//     deleted).
//   - HEAD: 400 when the metadata lacks filename (or name) or filetype (or
//     type), partial uploads aside; else 200 with Upload-Offset,
//     Upload-Length (or Upload-Defer-Length: 1), only filename and
//     filetype in Upload-Metadata, Cache-Control: no-store.
//   - PATCH, in tuspyserver's order: 404 {"detail": "Upload not found"}
//     when the upload's file is not there; then the upload's lock: while
//     another PATCH of the same upload is being served it waits, up to
//     --lock-wait-ms (default 30000), then 503 (tuspyserver 4.2.4's
//     answer; 4.2.3 itself hangs its whole server there). Then 410 when
//     expired, 400 without Upload-Offset or with one that is not an
//     integer, 409 when it differs from the offset. Then the body, each
//     chunk appended as it comes: a chunk past Upload-Length is 400
//     "Upload would exceed declared Upload-Length", past the max size 413
//     "Upload exceeds maximum allowed size" (earlier chunks stay in the
//     file, the offset is not saved). A client gone mid-body: the bytes
//     received are saved and the request goes on unanswered. Only then,
//     with the bytes saved: 401 for a bad --token, 422 without a
//     Content-Length (chunked), 412 without Tus-Resumable, 415 unless
//     Content-Type is exactly application/offset+octet-stream, 403 for a
//     final concatenation; Upload-Length sets a deferred length; 204.
//   - DELETE: 204, 404 when unknown, 410 when expired. Other methods: 405.
//   - Completion hook: runs when a PATCH that got this far finds offset ==
//     length (so again on a zero-byte PATCH of a complete upload), and
//     after a POST only for a 0-byte upload or a final concatenation: a
//     creation-with-upload POST carrying the whole file never runs it.
//     Without --service-hook it hands the upload to the task API (a task
//     for its taskId --task-delay ms later), like the tus-node profile.
//   - --service-hook: the hook does what the service's does, inside the
//     final request, before answering: (1) the first 8 KiB (magic bytes,
//     the file-type package) must match the extension of filename, one of
//     mp3 wav aac ogg m4a wma amr flac awb mp4 mov avi wmv mkv webm; an
//     empty file, an unknown format or a mismatch makes the request answer
//     500 {"error": {"message": "An unexpected error occurred", "code":
//     "INTERNAL_ERROR"}}, the upload staying complete and no task made;
//     (2) it moves the file to DIR/.taken/<id><ext>, so HEAD and PATCH
//     answer 404 from then on; (3) it "decodes" for --decode-ms MS
//     (default 0; other requests are served meanwhile); (4) it creates the
//     task with the taskId metadata (a random one without) at once,
//     ignoring --task-delay, then answers 204. A client gone meanwhile
//     does not stop it.
//   - Every hook run appends a line to DIR/.hooks.jsonl when it ends:
//     {"time", "id", "taskId", "filename", "trigger": "patch" | "post",
//     "result": "ok" | "refused", "reason" (null or the refusal), "file"
//     (where the bytes are, relative to DIR)}. At start-up an "ok" run
//     whose task is missing gets its task (the backend died during
//     --task-delay); uploads whose hook never ran get none.
//   - Auth as on the service: --token is checked on POST (before
//     anything), PATCH (after the body was stored) and the task routes;
//     OPTIONS, HEAD and DELETE need none.
//   - Store: tuspyserver's layout, DIR/<id> (32 hex digits) and
//     DIR/<id>.info; inspect.js reads it. --expiration-ms defaults to one
//     day (the service's days_to_keep), 0 for never.
//   - --body-limit, --log, --port-file, --relative-location, --tls-*, the
//     fault switches (answers in FastAPI's JSON) and the task switches
//     work as in tus-node; --without, --store discard and --hostile do
//     not apply and are refused.

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { Readable } from 'node:stream';
import { parseArgs } from 'node:util';

import { FileStore } from '@tus/file-store';
import { Server as TusServer } from '@tus/server';

import { DiscardStore } from './discard-store.js';
import { HOSTILE_KINDS, makeHostile } from './hostile.js';
import { TUS_PATH, drain, onTusRoute, rewriteHeader } from './http-util.js';
import { mulberry32 } from './prng.js';
import { TUSPY_EXPIRATION_MS, TUSPY_LOCK_WAIT_MS, TUSPY_MAX_SIZE, makeTuspy } from './tuspy.js';

import { DEFAULT_FAIL_MESSAGE, GARBAGE_KINDS, TRANSCRIBERS, Tasks } from './tasks.js';


// ---------------------------------------------------------------------------
// Command line

const USAGE = `usage: node server.js --dir DIR [--port N] [--host 127.0.0.1]
         [--body-limit BYTES] [--token TOKEN | --token-file FILE]
         [--max-size BYTES] [--log FILE] [--port-file FILE]
         [--expiration-ms MS] [--relative-location] [--without EXT,...]
         [--seed N] [--fail-share P [--fail-status CODE] [--retry-after S]]
         [--cut-after N [--cut-count K]] [--conflict-once] [--forget-once]
         [--expire-once] [--stall-ms MS [--stall-count K]]
         [--transcriber fake|pocketsphinx] [--task-delay MS]
         [--task-step-ms MS] [--task-fail [MESSAGE]] [--task-slow-ms MS]
         [--task-garbage KIND [--task-garbage-count N]]
         [--store file|discard] [--hostile KIND [--hostile-count K]]
         [--tls-cert FILE --tls-key FILE]
         [--profile tus-node|tuspyserver [--service-hook [--decode-ms MS]]
          [--lock-wait-ms MS]]
         (--task-garbage KIND: ${GARBAGE_KINDS.join(', ')})
         (--hostile KIND: ${HOSTILE_KINDS.join(', ')})`;

function die(msg) {
  process.stderr.write(`server.js: ${msg}\n${USAGE}\n`);
  process.exit(2);
}

function parseCount(name, value, { min = 0, max = Number.MAX_SAFE_INTEGER } = {}) {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value)) || Number(value) < min) {
    die(`--${name} wants an integer >= ${min}, got ${JSON.stringify(value)}`);
  }
  if (Number(value) > max) die(`--${name} wants an integer <= ${max}, got ${value}`);
  return Number(value);
}

// A share: a decimal number from 0 to 1.
function parseShare(name, value) {
  if (value === undefined) return undefined;
  if (!/^(\d+(\.\d*)?|\.\d+)$/.test(value) || !(Number(value) <= 1)) {
    die(`--${name} wants a number from 0 to 1, got ${JSON.stringify(value)}`);
  }
  return Number(value);
}

function parseFaults(values) {
  const needs = (opt, base) => {
    if (values[opt] !== undefined && values[base] === undefined) die(`--${opt} needs --${base}`);
  };
  needs('fail-status', 'fail-share');
  needs('retry-after', 'fail-share');
  needs('cut-count', 'cut-after');
  needs('stall-count', 'stall-ms');
  const failStatus = parseCount('fail-status', values['fail-status']) ?? 500;
  if (!(failStatus === 423 || failStatus === 429 || (failStatus >= 500 && failStatus <= 599))) {
    die(`--fail-status takes 423, 429 or 500-599, got ${failStatus}`);
  }
  const faults = {
    seed: parseCount('seed', values.seed, { max: 0xffffffff }) ?? 1,
    failShare: parseShare('fail-share', values['fail-share']) ?? 0,
    failStatus,
    retryAfter: parseCount('retry-after', values['retry-after']),
    cutAfter: parseCount('cut-after', values['cut-after']),
    cutCount: parseCount('cut-count', values['cut-count'], { min: 1 }) ?? 1,
    conflictOnce: values['conflict-once'],
    forgetOnce: values['forget-once'],
    expireOnce: values['expire-once'],
    stallMs: parseCount('stall-ms', values['stall-ms']),
    stallCount: parseCount('stall-count', values['stall-count'], { min: 1 }) ?? 1,
  };
  faults.active = faults.failShare > 0 || faults.cutAfter !== undefined ||
    faults.conflictOnce || faults.forgetOnce || faults.expireOnce || faults.stallMs !== undefined;
  return faults;
}

function parseTaskSwitches(values) {
  if (values['task-garbage-count'] !== undefined && values['task-garbage'] === undefined) {
    die('--task-garbage-count needs --task-garbage');
  }
  const transcriber = values.transcriber ?? 'fake';
  if (!TRANSCRIBERS.includes(transcriber)) die(`--transcriber takes ${TRANSCRIBERS.join(' or ')}`);
  const garbage = values['task-garbage'];
  if (garbage !== undefined && !GARBAGE_KINDS.includes(garbage)) {
    die(`--task-garbage takes ${GARBAGE_KINDS.join(', ')}`);
  }
  let failMessage = values['task-fail'];
  if (failMessage === TASK_FAIL_DEFAULT) failMessage = DEFAULT_FAIL_MESSAGE;
  if (failMessage !== undefined && failMessage.trim() === '') die('--task-fail MESSAGE is empty');
  return {
    transcriber,
    delayMs: parseCount('task-delay', values['task-delay']) ?? 300,
    stepMs: parseCount('task-step-ms', values['task-step-ms']) ?? 200,
    failMessage,
    slowMs: parseCount('task-slow-ms', values['task-slow-ms']),
    garbage,
    garbageCount: parseCount('task-garbage-count', values['task-garbage-count'], { min: 1 }),
  };
}

// --task-fail takes an optional MESSAGE: a bare --task-fail (last, or
// followed by another option) stands for the default message.
const TASK_FAIL_DEFAULT = '\0default';
function expandTaskFail(argv) {
  return argv.map((a, i) =>
    a === '--task-fail' && (i + 1 === argv.length || argv[i + 1].startsWith('--'))
      ? `--task-fail=${TASK_FAIL_DEFAULT}` : a);
}

const PROFILES = ['tus-node', 'tuspyserver'];

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
      args: expandTaskFail(argv),
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
        seed: { type: 'string' },
        'fail-share': { type: 'string' },
        'fail-status': { type: 'string' },
        'retry-after': { type: 'string' },
        'cut-after': { type: 'string' },
        'cut-count': { type: 'string' },
        'conflict-once': { type: 'boolean', default: false },
        'forget-once': { type: 'boolean', default: false },
        'expire-once': { type: 'boolean', default: false },
        'stall-ms': { type: 'string' },
        'stall-count': { type: 'string' },
        transcriber: { type: 'string' },
        'task-delay': { type: 'string' },
        'task-step-ms': { type: 'string' },
        'task-fail': { type: 'string' },
        'task-slow-ms': { type: 'string' },
        'task-garbage': { type: 'string' },
        'task-garbage-count': { type: 'string' },
        store: { type: 'string', default: 'file' },
        hostile: { type: 'string' },
        'hostile-count': { type: 'string' },
        'tls-cert': { type: 'string' },
        'tls-key': { type: 'string' },
        profile: { type: 'string', default: 'tus-node' },
        'service-hook': { type: 'boolean', default: false },
        'decode-ms': { type: 'string' },
        'lock-wait-ms': { type: 'string' },
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
  if (values.store !== 'file' && values.store !== 'discard') die('--store takes file or discard');
  const port = parseCount('port', values.port);
  if (port > 65535) die('--port out of range');
  if (values.hostile !== undefined && !HOSTILE_KINDS.includes(values.hostile)) {
    die(`--hostile takes ${HOSTILE_KINDS.join(', ')}`);
  }
  if (values['hostile-count'] !== undefined && values.hostile === undefined) {
    die('--hostile-count needs --hostile');
  }
  if ((values['tls-cert'] === undefined) !== (values['tls-key'] === undefined)) {
    die('--tls-cert and --tls-key go together');
  }
  let tls;
  if (values['tls-cert'] !== undefined) {
    try {
      tls = {
        cert: fs.readFileSync(values['tls-cert']),
        key: fs.readFileSync(values['tls-key']),
      };
    } catch (err) {
      die(`cannot read the TLS certificate or key: ${err.message}`);
    }
  }
  const profile = values.profile;
  if (!PROFILES.includes(profile)) die(`--profile takes ${PROFILES.join(' or ')}`);
  if (profile === 'tus-node') {
    for (const opt of ['service-hook', 'decode-ms', 'lock-wait-ms']) {
      if (values[opt] !== undefined && values[opt] !== false) die(`--${opt} needs --profile tuspyserver`);
    }
  } else {
    const unsupported = {
      without: 'tuspyserver always offers every extension it has',
      hostile: 'the hostile answers are written for @tus/server',
      store: 'tuspyserver keeps every byte',
    };
    for (const [opt, why] of Object.entries(unsupported)) {
      if (values[opt] !== undefined && !(opt === 'store' && values.store === 'file')) {
        die(`--${opt} does not apply to --profile tuspyserver (${why})`);
      }
    }
  }
  if (values['decode-ms'] !== undefined && !values['service-hook']) die('--decode-ms needs --service-hook');
  const maxSize = parseCount('max-size', values['max-size'], { min: 1 });
  const expirationMs = parseCount('expiration-ms', values['expiration-ms']);
  return {
    profile,
    tuspy: profile !== 'tuspyserver' ? null : {
      maxSize: maxSize ?? TUSPY_MAX_SIZE,
      expirationMs: expirationMs ?? TUSPY_EXPIRATION_MS,
      lockWaitMs: parseCount('lock-wait-ms', values['lock-wait-ms']) ?? TUSPY_LOCK_WAIT_MS,
      serviceHook: values['service-hook'],
      decodeMs: parseCount('decode-ms', values['decode-ms']) ?? 0,
    },
    dir: path.resolve(values.dir),
    port,
    host: values.host,
    bodyLimit: parseCount('body-limit', values['body-limit']),
    token,
    maxSize,
    logFile: values.log,
    portFile: values['port-file'],
    expirationMs: expirationMs ?? 0,
    relativeLocation: values['relative-location'],
    without: parseWithout(values.without),
    faults: parseFaults(values),
    tasks: parseTaskSwitches(values),
    discard: values.store === 'discard',
    hostile: values.hostile,
    hostileCount: parseCount('hostile-count', values['hostile-count'], { min: 1 }) ?? 1,
    tls,
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
// Expect: 100-continue) whose body was still arriving. A request hit by an
// injected fault also has "fault": NAME (see the faults stage). A request
// with an Upload-Metadata header has it as "upload_metadata", exactly as
// sent: its values are base64, so a test can decode them byte for byte
// (inspect.js gives them decoded into JS strings, which cannot hold bytes
// that are not UTF-8).
// "uploads_in_flight" counts the POST and PATCH requests being served when
// this one arrived, itself included: how many files a client sends at once.
let uploadsInFlight = 0;
function requestLog(ctx, next) {
  const { config, req, res } = ctx;
  if (!config.logFile) return next();
  const upload = req.method === 'POST' || req.method === 'PATCH';
  if (upload) {
    uploadsInFlight++;
    res.once('close', () => uploadsInFlight--);
  }

  const entry = {
    method: req.method,
    path: ctx.url.pathname,
    status: null,
    body_bytes: 0,
    content_length: headerNumber(req, 'content-length'),
    upload_offset: headerNumber(req, 'upload-offset'),
    upload_length: headerNumber(req, 'upload-length'),
    defer_length: headerNumber(req, 'upload-defer-length'),
    upload_metadata: req.headers['upload-metadata'], // left out when absent
    auth: req.headers.authorization !== undefined, // never the value
    host: req.headers.host,
    // The client's port: requests sharing it came over one connection.
    conn: req.socket.remotePort,
    uploads_in_flight: upload ? uploadsInFlight : undefined,
  };
  let written = false;
  const write = (status) => {
    if (written) return;
    written = true;
    entry.status = status;
    entry.body_bytes = req.bodyBytes ?? 0;
    if (ctx.fault) entry.fault = ctx.fault;
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

// Whether a request carries Authorization: Bearer TOKEN (or needs none).
function tokenOk(config, req) {
  if (config.token === undefined) return true;
  const m = /^Bearer +(\S+) *$/i.exec(headerValue(req, 'authorization') ?? '');
  const given = Buffer.from(m ? m[1] : '', 'utf8');
  const want = Buffer.from(config.token, 'utf8');
  return given.length === want.length && crypto.timingSafeEqual(given, want);
}

function unauthorized(ctx) {
  refuse(ctx, () =>
    sendJson(ctx.res, 401, { detail: 'Not authenticated' }, {
      'WWW-Authenticate': 'Bearer realm="whisperx"',
    }),
  );
}

// Every request, OPTIONS included, must carry Authorization: Bearer TOKEN.
// In the tuspyserver profile the TUS routes check it themselves, where the
// service does (POST and PATCH only).
function auth(ctx, next) {
  const { config, req } = ctx;
  if (config.profile === 'tuspyserver' && onTusRoute(ctx.url.pathname)) return next();
  if (tokenOk(config, req)) return next();
  unauthorized(ctx);
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
  // Only TUS requests: DELETE /task/{id}/delete is no termination.
  if (without.size === 0 || !onTusRoute(ctx.url.pathname)) return next();

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
  rewriteHeader(res, 'tus-extension', filter);
  return next();
}

// ---------------------------------------------------------------------------
// Fault injection (--seed, --fail-share, --cut-after, --conflict-once,
// --forget-once, --expire-once, --stall-ms; semantics at the top of the file)

const UPLOAD_PATH_RE = new RegExp(`^${TUS_PATH}/([^/]+)/?$`);

// The upload id a request is about, as @tus/server reads it, or null.
function uploadIdOf(url) {
  const m = UPLOAD_PATH_RE.exec(url.pathname);
  if (!m) return null;
  try {
    return decodeURIComponent(m[1]);
  } catch {
    return null;
  }
}

// Answers like @tus/server does (Tus-Resumable on every response). The
// body is not read: Node discards what is left of it once the response is
// out, and the connection stays usable.
function tusText(ctx, status, text, headers = {}) {
  ctx.req.resume();
  sendText(ctx.res, status, text, { 'Tus-Resumable': '1.0.0', ...headers });
}

// A request body as a stream of its own, for @tus/server. With a limit, at
// the first byte past `limit` it asks overflow(): true ends the stream at
// exactly `limit` bytes and leaves the rest of the source unread; false
// lets everything through. knownLonger (the Content-Length says the body
// is longer) ends it as soon as `limit` bytes passed. If the client goes
// away the stream just ends: @tus/server keeps what it got, as it does for
// an aborted request it reads itself. discardRest() throws away whatever
// @tus/server left unread (it refused the request before reading it all),
// so that the connection can carry the next request.
function bodyStream(source, opts = {}) {
  const { limit = Infinity, knownLonger = false, overflow = () => false } = opts;
  let taken = 0;
  let mode = 'head'; // 'head' (counting to limit), 'through', 'done'
  const out = new Readable({
    read() {
      if (mode !== 'done') source.resume();
    },
  });
  const finish = () => {
    if (mode === 'done') return;
    mode = 'done';
    source.pause();
    source.off('data', onData);
    out.push(null);
  };
  const onData = (chunk) => {
    if (mode === 'head' && taken + chunk.length > limit) {
      if (overflow()) {
        if (limit > taken) out.push(chunk.subarray(0, limit - taken));
        taken = limit;
        finish();
        return;
      }
      mode = 'through';
    }
    taken += chunk.length;
    const more = out.push(chunk);
    if (knownLonger && taken === limit) finish();
    else if (!more) source.pause();
  };
  source.on('data', onData);
  source.once('end', finish);
  source.once('close', finish);
  source.on('error', () => {});
  source.pause();
  if (knownLonger && limit === 0) finish();
  out.discardRest = () => {
    source.off('data', onData);
    mode = 'done';
    if (!source.readableEnded) source.resume();
  };
  return out;
}

// Runs a PATCH through @tus/server's web interface with `body` (and
// Content-Length contentLength, or none) in place of the request's own, so
// that we hold the response: a web Response, to send or to drop.
function tusWeb(tus, ctx, body, contentLength) {
  const { req } = ctx;
  const headers = new Headers();
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    if (req.rawHeaders[i].toLowerCase() !== 'content-length') {
      headers.append(req.rawHeaders[i], req.rawHeaders[i + 1]);
    }
  }
  if (contentLength !== null) headers.set('Content-Length', String(contentLength));
  return tus.handleWeb(new Request(ctx.url.href, {
    method: req.method,
    headers,
    body: Readable.toWeb(body),
    duplex: 'half',
  }));
}

async function sendWeb(res, response) {
  const body = Buffer.from(await response.arrayBuffer());
  if (res.destroyed || res.headersSent) return;
  const headers = [];
  for (const [k, v] of response.headers) headers.push(k, v);
  res.writeHead(response.status, headers);
  res.end(body.length > 0 ? body : undefined);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The faults stage. Without any fault switch it passes everything on.
// With tus (@tus/server) it runs cut and stall PATCHes itself; with tuspy
// (the tuspyserver profile) it hands them on with ctx.faultPlan.
function makeFaults(config, tus, tuspy) {
  const f = config.faults;
  if (!f.active) return (ctx, next) => next();
  const store = tuspy ? tuspy.faultStore : tus.datastore;
  const reply = tuspy ? tuspy.faultReply : tusText;
  const draw = mulberry32(f.seed);
  const rng = () => draw() / 4294967296;
  const conflicted = new Set(); // uploads that had their 409
  const gone = new Set(); // expired uploads: 410 to everything
  let forgot = false;
  let expired = false;
  let cuts = 0;
  let stalls = 0;

  // Decisions are taken one PATCH at a time, in arrival order, even
  // though some look at the store: that is what makes them repeatable.
  let queue = Promise.resolve();
  const serially = (fn) => {
    const p = queue.then(fn);
    queue = p.catch(() => {});
    return p;
  };

  // What to do with one PATCH: { fault, ... } or {} for nothing.
  const decide = async (ctx, id) => {
    const fail = rng() < f.failShare; // one draw per PATCH, always
    if (gone.has(id)) return { fault: 'gone' };
    if (fail) return { fault: 'fail' };

    const offset = headerNumber(ctx.req, 'upload-offset');
    const length = headerNumber(ctx.req, 'content-length');
    const later = typeof offset === 'number' && offset > 0;
    const once = later && ((f.forgetOnce && !forgot) || (f.expireOnce && !expired) ||
      (f.conflictOnce && !conflicted.has(id)));
    const cutting = f.cutAfter !== undefined && cuts < f.cutCount &&
      (typeof length !== 'number' || length > f.cutAfter);
    let upload = null;
    if (once || cutting) upload = await store.getUpload(id).catch(() => null);
    if (upload && once) {
      if (f.forgetOnce && !forgot) {
        forgot = true;
        await store.remove(id).catch(() => {}); // already gone: as good
        return { fault: 'forget' };
      }
      if (f.expireOnce && !expired) {
        expired = true;
        gone.add(id);
        await store.remove(id).catch(() => {}); // already gone: as good
        return { fault: 'expire' };
      }
      conflicted.add(id);
      return { fault: 'conflict' };
    }
    const cuttable = cutting && upload !== null && upload.offset === offset;
    if (cuttable && typeof length === 'number') {
      cuts += 1;
      return { fault: 'cut' };
    }
    const stall = f.stallMs !== undefined && stalls < f.stallCount;
    if (stall) stalls += 1;
    // Chunked: only the body itself tells whether it is longer than N.
    if (cuttable) return { maybeCut: true, stall };
    return stall ? { fault: 'stall', stall } : {};
  };

  return async (ctx, next) => {
    const id = uploadIdOf(ctx.url);
    if (id === null) return next();
    if (ctx.req.method !== 'PATCH') {
      if (!gone.has(id)) return next();
      ctx.fault = 'gone';
      return reply(ctx, 410, tuspy ? 'Upload expired' : 'The file for this url no longer exists\n');
    }
    const plan = await serially(() => decide(ctx, id));
    if (plan.fault) ctx.fault = plan.fault;
    const source = ctx.tusReq ?? ctx.req;

    switch (plan.fault) {
      case 'gone':
      case 'expire':
        return reply(ctx, 410, tuspy ? 'Upload expired' : 'The file for this url no longer exists\n');
      case 'forget':
        return reply(ctx, 404, tuspy ? 'Upload not found' : 'The file for this url was not found\n');
      case 'conflict':
        return reply(ctx, 409, tuspy ? 'Offset mismatch' : 'Upload-Offset conflict\n');
      case 'fail': {
        if (!(await drain(source))) return; // client gone: nothing to answer
        const retry = f.retryAfter === undefined ? {} : { 'Retry-After': String(f.retryAfter) };
        const text = `${http.STATUS_CODES[f.failStatus] ?? 'Error'} (injected fault)`;
        return reply(ctx, f.failStatus, tuspy ? text : `${text}\n`, retry);
      }
      default:
        break;
    }
    if (plan.fault === undefined && !plan.maybeCut) return next();

    // cut, stall, or a chunked PATCH that may turn out to be cut.
    let cut = plan.fault === 'cut';
    const overflow = () => {
      if (cut) return true;
      if (cuts >= f.cutCount) return false;
      cuts += 1;
      if (plan.stall) stalls -= 1;
      cut = true;
      ctx.fault = 'cut';
      return true;
    };
    if (tuspy) {
      ctx.fault = undefined; // set by the profile if it happens
      ctx.faultPlan = {
        limit: cut || plan.maybeCut ? f.cutAfter : undefined, cut, overflow,
        stall: plan.stall, stallMs: f.stallMs,
      };
      return next();
    }
    // Run @tus/server on a stand-in request so that we hold its response.
    const body = cut || plan.maybeCut
      ? bodyStream(source, { limit: f.cutAfter, knownLonger: cut, overflow })
      : bodyStream(source);
    const declared = headerNumber(ctx.req, 'content-length');
    const response = await tusWeb(tus, ctx, body,
      cut ? f.cutAfter : typeof declared === 'number' ? declared : null);
    if (cut) {
      // The first N bytes are stored; the client never hears of them.
      await response.arrayBuffer().catch(() => {});
      ctx.res.destroy();
      return;
    }
    body.discardRest();
    if (plan.stall) {
      ctx.fault = 'stall';
      await sleep(f.stallMs);
    }
    await sendWeb(ctx.res, response);
  };
}

// Sends TUS requests to @tus/server; the rest goes on (to notFound).
function makeRouter(tus) {
  return async (ctx, next) => {
    if (onTusRoute(ctx.url.pathname)) {
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

// The default profile's pipeline: @tus/server behind the stages.
function tusNodePipeline(config, tasks) {
  const tus = new TusServer({
    path: TUS_PATH,
    datastore: config.discard ? new DiscardStore() : new FileStore({
      directory: config.dir,
      expirationPeriodInMilliseconds: config.expirationMs,
    }),
    maxSize: config.maxSize,
    // @tus/server takes the scheme from forwarding headers only (else
    // http); an https backend must say https in its Location.
    generateUrl: (_req, { proto, host, path, id }) => (config.relativeLocation
      ? `${path}/${id}` : `${config.tls ? 'https' : proto}://${host}${path}/${id}`),
    // The last byte arrived: a task is due if the metadata has a taskId.
    onUploadFinish: async (_req, upload) => {
      if (config.discard) return {};
      tasks.uploadFinished({ id: upload.id, metadata: upload.metadata });
      return {};
    },
    onResponseError: (_req, err) => {
      if (!err || !err.status_code || err.status_code >= 500) {
        process.stderr.write(`server.js: tus error: ${errorText(err)}\n`);
      }
      return undefined; // keep @tus/server's own status and body
    },
  });
  return [
    requestLog, auth, bodyGate, extensionGate, makeHostile(config.hostile, config.hostileCount),
    makeFaults(config, tus, null), tasks.stage, makeRouter(tus), notFound,
  ];
}

function main() {
  const config = parseConfig(process.argv.slice(2));
  fs.mkdirSync(config.dir, { recursive: true });

  const tasks = new Tasks({ dir: config.dir, ...config.tasks });
  let pipeline;
  if (config.profile === 'tuspyserver') {
    const tuspy = makeTuspy({
      config, tasks, authorized: (req) => tokenOk(config, req), unauthorized,
    });
    tasks.opts.pickUp = tuspy.pickUp;
    pipeline = [
      requestLog, auth, bodyGate, makeFaults(config, null, tuspy), tasks.stage, tuspy.stage, notFound,
    ];
  } else {
    pipeline = tusNodePipeline(config, tasks);
  }
  tasks.load();
  const handle = compose(pipeline);

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

  const server = config.tls
    ? https.createServer({ ...config.tls, IncomingMessage: CountingIncomingMessage })
    : http.createServer({ IncomingMessage: CountingIncomingMessage });
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
    process.stdout.write(`listening on ${config.tls ? 'https' : 'http'}://${host}:${port}\n`);
  });

  const shutdown = () => {
    tasks.close(); // kills sox / pocketsphinx children
    server.close();
    server.closeAllConnections();
    process.exit(0);
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}

main();
