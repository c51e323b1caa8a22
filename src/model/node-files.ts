/**
 * Node-only byte sources: a file read through a file handle (positional reads, nothing kept in
 * memory) and a model directory on disk. Kept apart so browser bundles never import node:fs.
 */
import { open, stat } from 'node:fs/promises';
import * as path from 'node:path';
import { HipAttnError } from '../errors.js';
import { type ByteSource, type ModelDirectory, checkRange } from './byte-source.js';

/** Opens a file for random access. Errors (missing file, directory) are MODEL_FORMAT errors naming the path. */
export async function fileSource(filePath: string): Promise<ByteSource> {
  let handle;
  try {
    handle = await open(filePath, 'r');
  } catch (e) {
    throw new HipAttnError('MODEL_FORMAT', `${filePath}: cannot open (${(e as Error).message})`, { cause: e });
  }
  const st = await handle.stat();
  if (!st.isFile()) {
    await handle.close();
    throw new HipAttnError('MODEL_FORMAT', `${filePath}: not a regular file`);
  }
  let closed = false;
  const h = handle;
  const where = { name: filePath, size: st.size };
  return {
    ...where,
    async read(offset: number, length: number): Promise<Uint8Array> {
      if (closed) throw new HipAttnError('MODEL_FORMAT', `${filePath}: read after close`);
      checkRange(where, offset, length, 'a read');
      const buf = new Uint8Array(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await h.read(buf, done, length - done, offset + done);
        if (bytesRead === 0) {
          throw new HipAttnError('MODEL_FORMAT', `${filePath}: file ended at byte ${offset + done} while reading ${length} bytes at ${offset} (file changed while reading?)`);
        }
        done += bytesRead;
      }
      return buf;
    },
    async close(): Promise<void> {
      if (!closed) {
        closed = true;
        await h.close();
      }
    },
  };
}

/** A model directory on disk (missing files resolve to undefined). */
export function nodeDirectory(dirPath: string): ModelDirectory {
  return {
    name: dirPath,
    async open(file: string): Promise<ByteSource | undefined> {
      const p = path.join(dirPath, file);
      try {
        const st = await stat(p);
        if (!st.isFile()) return undefined;
      } catch {
        return undefined;
      }
      return fileSource(p);
    },
  };
}

/** True when `p` is an existing directory. */
export async function isDirectory(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isDirectory();
  } catch {
    return false;
  }
}
