/**
 * Random-access byte sources, so that the weight readers never need a whole file in memory and
 * work the same in Node (file handles, see node-files.ts) and in the browser (File / Blob /
 * ArrayBuffer). Nothing here imports Node modules.
 */
import { HipAttnError } from '../errors.js';

export interface ByteSource {
  /** Name used in error messages (a file path or file name). */
  readonly name: string;
  /** Total size in bytes. */
  readonly size: number;
  /** Reads exactly `length` bytes at `offset`; rejects when the range is outside the source. */
  read(offset: number, length: number): Promise<Uint8Array>;
  /** Releases the underlying handle, if any. Reading after close is an error. */
  close(): Promise<void>;
}

/** Throws MODEL_FORMAT unless [offset, offset + length) lies inside the source. */
export function checkRange(source: { name: string; size: number }, offset: number, length: number, what: string): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > source.size) {
    throw new HipAttnError(
      'MODEL_FORMAT',
      `${source.name}: ${what} needs bytes [${offset}, ${offset + length}) but the file has ${source.size} bytes (truncated or corrupt file?)`,
    );
  }
}

/** A source over bytes already in memory (an ArrayBuffer, a Uint8Array or a Node Buffer). */
export function bufferSource(name: string, bytes: ArrayBuffer | Uint8Array): ByteSource {
  const view = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const where = { name, size: view.byteLength };
  return {
    ...where,
    async read(offset: number, length: number): Promise<Uint8Array> {
      checkRange(where, offset, length, 'a read');
      return view.subarray(offset, offset + length);
    },
    async close(): Promise<void> {},
  };
}

/** A source over a Blob (a browser File is a Blob); reads slices on demand. */
export function blobSource(name: string, blob: Blob): ByteSource {
  const where = { name, size: blob.size };
  return {
    ...where,
    async read(offset: number, length: number): Promise<Uint8Array> {
      checkRange(where, offset, length, 'a read');
      return new Uint8Array(await blob.slice(offset, offset + length).arrayBuffer());
    },
    async close(): Promise<void> {},
  };
}

/**
 * A set of named files, e.g. a Hugging Face model directory. `open` resolves to undefined when
 * the file does not exist. Implemented for Node directories in node-files.ts and for a map of
 * browser Files by `mapDirectory`.
 */
export interface ModelDirectory {
  /** Name used in error messages (a directory path). */
  readonly name: string;
  open(file: string): Promise<ByteSource | undefined>;
}

/** A directory over in-memory or Blob contents, keyed by file name. */
export function mapDirectory(name: string, files: Map<string, Blob | ArrayBuffer | Uint8Array>): ModelDirectory {
  return {
    name,
    async open(file: string): Promise<ByteSource | undefined> {
      const f = files.get(file);
      if (f === undefined) return undefined;
      const label = `${name}/${file}`;
      return f instanceof Blob ? blobSource(label, f) : bufferSource(label, f);
    },
  };
}

/** Reads a whole (small) source as UTF-8 text. */
export async function readText(source: ByteSource): Promise<string> {
  const bytes = await source.read(0, source.size);
  return new TextDecoder('utf-8', { fatal: false }).decode(bytes);
}

/**
 * Largest JSON file read (config, generation config, tokenizer, shard index). The biggest real
 * ones, tokenizer.json files of 256k-token vocabularies, are tens of MB; a file far larger is not
 * one of these, and reading it whole would take its size in memory before the parser fails.
 */
export const MAX_JSON_BYTES = 256 * 2 ** 20;

/** Reads and parses a JSON file; MODEL_FORMAT error naming the file when it is not JSON or larger than MAX_JSON_BYTES. */
export async function readJson(source: ByteSource): Promise<unknown> {
  if (source.size > MAX_JSON_BYTES) {
    throw new HipAttnError('MODEL_FORMAT', `${source.name}: ${source.size} bytes is too large for a JSON model file (at most ${MAX_JSON_BYTES})`);
  }
  const text = await readText(source);
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new HipAttnError('MODEL_FORMAT', `${source.name}: not valid JSON (${(e as Error).message})`, { cause: e });
  }
}

/** Opens `file` in `dir` and parses it as JSON; undefined when the file does not exist. */
export async function readJsonFile(dir: ModelDirectory, file: string): Promise<unknown> {
  const src = await dir.open(file);
  if (!src) return undefined;
  try {
    return await readJson(src);
  } finally {
    await src.close();
  }
}

/** Opens `file` in `dir` and reads it as text; undefined when the file does not exist. */
export async function readTextFile(dir: ModelDirectory, file: string): Promise<string | undefined> {
  const src = await dir.open(file);
  if (!src) return undefined;
  try {
    return await readText(src);
  } finally {
    await src.close();
  }
}
