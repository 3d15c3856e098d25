// The hostile stage of the reference backend (server.js --hostile KIND).
//
// It owns the answers no honest TUS server gives, so that tests can show
// what tusfs does with them: no crash, a clear logged error, and no byte
// lost. The first --hostile-count K (default 1) requests of KIND's method
// on the upload route get the bad answer; later ones go on to @tus/server
// as usual, so a retry or a remount can finish the upload. Answers that
// Node's ServerResponse would refuse to send (control characters in a
// header) are written raw to the socket after the request body was read.
//
//   location-missing   POST: 201 with no Location
//   location-empty     POST: 201 with an empty Location
//   location-huge      POST: 201 with a 9 000-byte Location
//   location-control   POST: 201 with a Location holding a control byte
//   location-file      POST: 201 with a file:// Location
//   location-foreign   POST: created as usual, but the Location names
//                      another origin (localhost for 127.0.0.1) that
//                      reaches this same server
//   offset-garbage     PATCH: 204 with Upload-Offset "12abc"
//   offset-negative    PATCH: 204 with Upload-Offset -5
//   offset-beyond      PATCH: 204 with an offset past the bytes sent
//   offset-backwards   PATCH: 204 with an offset before the request's
//   headers-huge       PATCH: 204 with 70 KiB of headers
//   redirect-patch     PATCH: 307 to the same URL
//   drip               PATCH: a 200 whose 100 000-byte body comes one
//                      byte every 500 ms, until the client gives up
//   body-endless       PATCH: a 200 whose body has no length and comes as
//                      fast as the client reads, up to 64 MiB

import { TUS_PATH, drain, onTusRoute, rewriteHeader } from './http-util.js';

export const HOSTILE_KINDS = [
  'location-missing', 'location-empty', 'location-huge', 'location-control',
  'location-file', 'location-foreign', 'offset-garbage', 'offset-negative',
  'offset-beyond', 'offset-backwards', 'headers-huge', 'redirect-patch', 'drip',
  'body-endless',
];

function raw(ctx, status, headers) {
  const head = [`HTTP/1.1 ${status}`, 'Tus-Resumable: 1.0.0', 'Content-Length: 0',
    'Connection: close', ...headers].join('\r\n');
  const sock = ctx.req.socket;
  sock.end(Buffer.from(`${head}\r\n\r\n`, 'latin1'));
}

function drip(ctx, offset) {
  const sock = ctx.req.socket;
  let left = 100000;
  sock.write(`HTTP/1.1 200 OK\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: ${offset}\r\n` +
    `Content-Length: ${left}\r\n\r\n`);
  const timer = setInterval(() => {
    if (sock.destroyed || left === 0) {
      clearInterval(timer);
      sock.destroy();
      return;
    }
    sock.write('x');
    left -= 1;
  }, 500);
  sock.once('close', () => clearInterval(timer));
}

// A body that ends only when the connection does (or at 64 MiB, to stay
// bounded), written as fast as the socket drains.
function endless(ctx, offset) {
  const sock = ctx.req.socket;
  const piece = Buffer.alloc(64 * 1024, 'x');
  let left = 1024;
  sock.write(`HTTP/1.1 200 OK\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: ${offset}\r\n` +
    'Connection: close\r\n\r\n');
  const pump = () => {
    while (left > 0 && !sock.destroyed) {
      left -= 1;
      if (!sock.write(piece)) return;
    }
    sock.end();
  };
  sock.on('drain', pump);
  sock.on('error', () => {});
  pump();
}

export function makeHostile(kind, count) {
  if (kind === undefined) return (ctx, next) => next();
  const method = kind.startsWith('location-') ? 'POST' : 'PATCH';
  let left = count;

  return async (ctx, next) => {
    const { req, url } = ctx;
    if (!onTusRoute(url.pathname) || req.method !== method || left === 0) return next();
    // Backwards needs somewhere to go back from.
    if (kind === 'offset-backwards' && !(Number(req.headers['upload-offset']) > 0)) return next();
    left -= 1;
    ctx.fault = `hostile ${kind}`;
    if (kind === 'location-foreign') {
      // Same server, same port, another origin.
      rewriteHeader(ctx.res, 'location', (v) => String(v).replace('//127.0.0.1:', '//localhost:'));
      return next();
    }
    const offset = Number(req.headers['upload-offset'] ?? 0);
    const length = Number(req.headers['content-length'] ?? 0);
    if (!(await drain(ctx.tusReq ?? req))) return undefined;
    const origin = `${ctx.config.tls ? 'https' : 'http'}://${req.headers.host}`;
    switch (kind) {
      case 'location-missing':
        return raw(ctx, '201 Created', ['Upload-Offset: 0']);
      case 'location-empty':
        return raw(ctx, '201 Created', ['Location: ', 'Upload-Offset: 0']);
      case 'location-huge':
        return raw(ctx, '201 Created',
          [`Location: ${origin}${TUS_PATH}/${'a'.repeat(9000)}`, 'Upload-Offset: 0']);
      case 'location-control':
        return raw(ctx, '201 Created',
          [`Location: ${origin}${TUS_PATH}/ab\x01cd`, 'Upload-Offset: 0']);
      case 'location-file':
        return raw(ctx, '201 Created', ['Location: file:///etc/passwd', 'Upload-Offset: 0']);
      case 'offset-garbage':
        return raw(ctx, '204 No Content', ['Upload-Offset: 12abc']);
      case 'offset-negative':
        return raw(ctx, '204 No Content', ['Upload-Offset: -5']);
      case 'offset-beyond':
        return raw(ctx, '204 No Content', [`Upload-Offset: ${offset + length + 1000}`]);
      case 'offset-backwards':
        return raw(ctx, '204 No Content', [`Upload-Offset: ${Math.max(offset - 1, 0)}`]);
      case 'headers-huge':
        return raw(ctx, '204 No Content', [
          `Upload-Offset: ${offset + length}`,
          ...Array.from({ length: 70 }, (_, i) => `X-Pad-${i}: ${'p'.repeat(1024)}`),
        ]);
      case 'redirect-patch':
        return raw(ctx, '307 Temporary Redirect', [`Location: ${origin}${url.pathname}`]);
      case 'drip':
        return drip(ctx, offset);
      case 'body-endless':
        return endless(ctx, offset + length);
      default:
        throw new Error(`unknown hostile kind ${kind}`);
    }
  };
}
