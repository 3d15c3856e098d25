// Small HTTP helpers the backend's stages share (server.js, hostile.js):
// the TUS route, draining a request body, and rewriting a response header
// on its way out.

export const TUS_PATH = '/uploads/files';

// Whether a path is on the TUS route (the collection or one upload).
export function onTusRoute(pathname) {
  return pathname === TUS_PATH || pathname.startsWith(`${TUS_PATH}/`);
}

// Reads and discards a body; true once it ended, false if the client left.
export function drain(stream) {
  return new Promise((resolve) => {
    if (stream.readableEnded) {
      resolve(true);
      return;
    }
    stream.on('error', () => {});
    stream.once('end', () => resolve(true));
    stream.once('close', () => resolve(stream.readableEnded));
    stream.resume();
  });
}

// Passes header `name` of res through fn as the head is written, whether
// it was set before writeHead or handed to it (as an object or a flat
// array, which is how @tus/server's adapter passes them).
export function rewriteHeader(res, name, fn) {
  const writeHead = res.writeHead;
  res.writeHead = function (status, ...rest) {
    if (this.hasHeader(name)) this.setHeader(name, fn(this.getHeader(name)));
    const headers = rest[rest.length - 1];
    if (Array.isArray(headers)) {
      for (let i = 0; i + 1 < headers.length; i += 2) {
        if (String(headers[i]).toLowerCase() === name) headers[i + 1] = fn(headers[i + 1]);
      }
    } else if (headers && typeof headers === 'object') {
      for (const k of Object.keys(headers)) {
        if (k.toLowerCase() === name) headers[k] = fn(headers[k]);
      }
    }
    return writeHead.call(this, status, ...rest);
  };
}
