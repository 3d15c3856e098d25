// The --store discard datastore (tests/backend/discard-store.js).
//
// A @tus/server DataStore that keeps each upload's offset, length and
// metadata in memory and throws its bytes away as they arrive, so that a
// benchmark measures the client and the wire, not the server's disk. It
// offers the same extensions as FileStore (less expiration, which needs
// stored files), and answers like it: a PATCH's new offset is what was
// read, a HEAD gives the offset so far. Nothing survives a restart.

import { DataStore, ERRORS, Upload } from '@tus/utils';

export class DiscardStore extends DataStore {
  constructor() {
    super();
    this.extensions = ['creation', 'creation-with-upload', 'creation-defer-length', 'termination'];
    this.uploads = new Map();
  }

  async create(upload) {
    this.uploads.set(upload.id, new Upload({ ...upload, offset: 0 }));
    return upload;
  }

  async getUpload(id) {
    const upload = this.uploads.get(id);
    if (!upload) throw ERRORS.FILE_NOT_FOUND;
    return new Upload({ ...upload });
  }

  async remove(id) {
    if (!this.uploads.delete(id)) throw ERRORS.FILE_NOT_FOUND;
  }

  // Reads the body to its end and counts it: the count is the new offset.
  async write(readable, id, offset) {
    const upload = this.uploads.get(id);
    if (!upload) throw ERRORS.FILE_NOT_FOUND;
    let read = 0;
    for await (const chunk of readable) read += chunk.length;
    upload.offset = offset + read;
    return upload.offset;
  }

  async declareUploadLength(id, length) {
    const upload = this.uploads.get(id);
    if (!upload) throw ERRORS.FILE_NOT_FOUND;
    upload.size = length;
  }
}
