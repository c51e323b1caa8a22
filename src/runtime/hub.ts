/**
 * Hugging Face Hub models in the standard Hugging Face cache (Node only; loaded lazily by
 * loadModel, so browser bundles never see it).
 *
 * Layout, the same as Python's huggingface_hub and @huggingface/hub's `scanCacheDir` read:
 *
 *     <cacheDir>/models--org--name/blobs/<etag>                 file contents (etag: the LFS sha256, else the git blob sha1)
 *     <cacheDir>/models--org--name/snapshots/<commit>/<path>    relative symlink to ../../blobs/<etag>
 *     <cacheDir>/models--org--name/refs/<revision>              the commit hash (no newline)
 *
 * Resolution uses @huggingface/hub's `modelInfo` (revision → commit) and `listFiles` (sizes,
 * oids, LFS oids, all at that commit); bytes come from `downloadFile`'s WebBlob (range requests
 * through `.slice(offset)`). Only the files loading needs are fetched.
 *
 * Downloads are resumable and safe between concurrent processes without locks: a partial
 * download rests in `blobs/<etag>.incomplete`; a downloader first claims it by renaming it to a
 * private name (`<etag>.incomplete.hipattn-<pid>-<random>-<host>`; a rename succeeds for one
 * process only), appends to it with a Range request from its size, checks the size and the
 * checksum, and renames it onto `blobs/<etag>`. Interrupted, it puts its partial file back as
 * `<etag>.incomplete`; killed, its private file is adopted later once its process is gone. Two
 * processes that start together both download and both rename identical, verified bytes.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, open, readFile, readdir, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import * as path from 'node:path';
import { HubApiError, type ListFileEntry, downloadFile, getHFHubCachePath, listFiles, modelInfo } from '@huggingface/hub';
import { HipAttnError, HubCacheMissError } from '../errors.js';
import { parseLlamaConfig } from '../model/config.js';
import type { OpenedModel } from '../model/load.js';
import { openModelPath } from '../model/node-load.js';
import { type HubModelId, type HubOptions, hubRevision, isLocalPathLike, isSafeRelativePath, parseHubId } from './hub-id.js';

export { type HubModelId, type HubOptions, parseHubId } from './hub-id.js';

/** Download progress of one file: `loaded` of `total` bytes (throttled; the last event has loaded = total). */
export interface HubProgressEvent {
  stage: 'download';
  item: string;
  loaded: number;
  total: number;
}

export interface HubDownloadOptions extends HubOptions {
  onProgress?: (event: HubProgressEvent) => void;
}

/** A model resolved to local files in the cache. */
export interface HubSnapshot {
  /** What to load: the snapshot directory (safetensors) or the GGUF file inside it. */
  path: string;
  format: 'safetensors' | 'gguf';
  repo: string;
  revision: string;
  commit: string;
  cacheDir: string;
  /** The repo files the snapshot holds for loading. */
  files: string[];
  /** True when no network request was made (offline, a cached pinned commit, or the unreachable-Hub fallback). */
  fromCache: boolean;
}

const DEFAULT_HUB = 'https://huggingface.co';
const COMMIT = /^[0-9a-f]{40}$/;
const HF_FILES = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'chat_template.jinja'];
const INDEX = 'model.safetensors.index.json';
const SINGLE = 'model.safetensors';
const PROGRESS_INTERVAL_MS = 100;
/** A private partial file of another host is adopted once it has not changed for this long. */
const FOREIGN_ORPHAN_MS = 10 * 60_000;

interface Ctx {
  repo: string;
  repoDir: string;
  cacheDir: string;
  hubUrl: string;
  accessToken: string | undefined;
  fetch: typeof fetch | undefined;
  retries: number;
  onProgress: ((e: HubProgressEvent) => void) | undefined;
  warn: (message: string) => void;
}

/** The cache folder of a model repo: `<cacheDir>/models--org--name`. */
export function repoCacheDir(cacheDir: string, repo: string): string {
  return path.join(cacheDir, ['models', ...repo.split('/')].join('--'));
}

/**
 * Resolves a local path or a Hub id to a local path: an existing path is returned as is; a Hub
 * id is downloaded (or found in the cache) and its snapshot directory or GGUF file returned.
 */
export async function resolveModelPath(source: string, options: HubDownloadOptions = {}): Promise<string> {
  if (await exists(source)) return source;
  const local = path.resolve(source);
  if (isLocalPathLike(source)) {
    throw new HipAttnError('NOT_FOUND', `${source}: no such local path (${local}); not looked up on the Hugging Face Hub, whose ids read org/name[@revision][/file.gguf]`);
  }
  try {
    return (await downloadHubModel(parseHubId(source)!, options)).path;
  } catch (e) {
    // `org/name` is also how a relative folder two levels deep reads (`models/my-model`): say
    // that no such folder exists either, so a mistyped path is not only reported as a Hub miss.
    if (e instanceof HipAttnError && (e.code === 'NOT_FOUND' || e.code === 'NETWORK')) {
      e.message = `${source}: no such local path (${local}), so it was taken as a Hugging Face Hub id: ${e.message}`;
    }
    throw e;
  }
}

/** Opens a local path (model directory or GGUF file) or a Hub id (downloading it if needed). */
export async function openModelString(source: string, options: HubDownloadOptions = {}): Promise<OpenedModel> {
  return openModelPath(await resolveModelPath(source, options));
}

/** Downloads (or finds in the cache) what loading a Hub model needs. */
export async function downloadHubModel(idOrString: string | HubModelId, options: HubDownloadOptions = {}): Promise<HubSnapshot> {
  const id = typeof idOrString === 'string' ? parseHubId(idOrString) : idOrString;
  if (!id) throw new HipAttnError('INVALID_OPTION', `${String(idOrString)}: not a Hugging Face Hub id (org/name[@revision][/file.gguf])`);
  const revision = hubRevision(id, options.revision);
  const cacheDir = path.resolve(options.cacheDir ?? getHFHubCachePath());
  const retries = options.retries ?? 3;
  if (!Number.isInteger(retries) || retries < 0) throw new HipAttnError('INVALID_OPTION', `hub.retries must be a non-negative integer, got ${retries}`);
  const ctx: Ctx = {
    repo: id.repo,
    repoDir: repoCacheDir(cacheDir, id.repo),
    cacheDir,
    hubUrl: (options.hubUrl ?? DEFAULT_HUB).replace(/\/+$/, ''),
    accessToken: undefined,
    fetch: options.fetch,
    retries,
    onProgress: options.onProgress,
    warn: options.onWarning ?? ((m) => console.warn(`hipattn: warning: ${m}`)),
  };

  if (options.offline) {
    const cached = await cachedSnapshot(ctx, revision, id.file);
    if (typeof cached === 'string') throw new HubCacheMissError(id.repo, revision, cacheDir, cached);
    return cached;
  }
  // A commit hash names immutable contents: a complete cached snapshot needs no request.
  if (COMMIT.test(revision)) {
    const cached = await cachedSnapshot(ctx, revision, id.file);
    if (typeof cached !== 'string') return cached;
  }
  ctx.accessToken = accessToken(options, ctx.warn);

  let commit: string;
  let entries: Map<string, ListFileEntry>;
  try {
    commit = COMMIT.test(revision) ? revision : await fetchCommit(ctx, revision);
    entries = new Map();
    for await (const e of listFiles({ repo: { type: 'model', name: id.repo }, revision: commit, recursive: true, expand: false, ...apiParams(ctx) })) {
      if (e.type === 'file') entries.set(e.path, e);
    }
  } catch (e) {
    if (!isNetworkError(e)) throw hubError(ctx, revision, e);
    const cached = await cachedSnapshot(ctx, revision, id.file);
    if (typeof cached === 'string') {
      throw new HipAttnError('NETWORK', `${id.repo}@${revision}: the Hugging Face Hub at ${ctx.hubUrl} cannot be reached (${describe(e)}) and the cache ${cacheDir} has no snapshot of it (${cached})`, { cause: e });
    }
    ctx.warn(`the Hugging Face Hub at ${ctx.hubUrl} cannot be reached (${describe(e)}); using the cached snapshot ${cached.commit} of ${id.repo}@${revision}`);
    return cached;
  }
  const snapshot = await fetchSnapshot(ctx, revision, commit, entries, id.file);
  if (revision !== commit) await writeAtomic(path.join(ctx.repoDir, 'refs', ...revision.split('/')), commit);
  return snapshot;
}

// ---------------------------------------------------------------------------------------------
// Resolution

function apiParams(ctx: Ctx): { hubUrl: string; accessToken?: string; fetch?: typeof fetch } {
  return { hubUrl: ctx.hubUrl, ...(ctx.accessToken ? { accessToken: ctx.accessToken } : {}), ...(ctx.fetch ? { fetch: ctx.fetch } : {}) };
}

function accessToken(options: HubOptions, warn: (m: string) => void): string | undefined {
  if (options.accessToken !== undefined && options.accessToken !== '') {
    if (!options.accessToken.startsWith('hf_')) throw new HipAttnError('INVALID_OPTION', 'hub.accessToken must be a Hugging Face token (hf_…)');
    return options.accessToken;
  }
  const env = process.env.HF_TOKEN;
  if (env === undefined || env === '') return undefined;
  if (!env.startsWith('hf_')) {
    warn('HF_TOKEN does not look like a Hugging Face token (hf_…); ignoring it');
    return undefined;
  }
  return env;
}

async function fetchCommit(ctx: Ctx, revision: string): Promise<string> {
  const info = await modelInfo({ name: ctx.repo, revision, additionalFields: ['sha'], ...apiParams(ctx) });
  const sha = (info as { sha?: unknown }).sha;
  if (typeof sha !== 'string' || !isSafeRelativePath(sha) || sha.includes('/')) {
    throw new HipAttnError('NETWORK', `${ctx.repo}@${revision}: the Hub's model info has no commit hash (sha)`);
  }
  return sha;
}

function fileEntry(ctx: Ctx, entries: Map<string, ListFileEntry>, file: string, commit: string, why: string): ListFileEntry {
  const e = entries.get(file);
  if (!e) throw new HipAttnError('NOT_FOUND', `${ctx.repo}@${commit}: ${file} (${why}) is not in the repo`);
  return e;
}

function ggufList(files: Iterable<string>): string[] {
  return [...files].filter((f) => /\.gguf$/i.test(f)).sort();
}

function severalGgufs(repo: string, ggufs: string[]): HipAttnError {
  return new HipAttnError(
    'INVALID_OPTION',
    `${repo} has no safetensors model but ${ggufs.length} GGUF files; pick one as ${repo}/FILE.gguf: ${ggufs.map((g) => `${repo}/${g}`).join(', ')}`,
  );
}

async function fetchSnapshot(ctx: Ctx, revision: string, commit: string, entries: Map<string, ListFileEntry>, file: string | undefined): Promise<HubSnapshot> {
  const snapDir = path.join(ctx.repoDir, 'snapshots', commit);
  const result = (format: 'safetensors' | 'gguf', files: string[], p: string): HubSnapshot => ({ path: p, format, repo: ctx.repo, revision, commit, cacheDir: ctx.cacheDir, files, fromCache: false });
  if (file !== undefined) {
    if (!entries.has(file)) {
      const ggufs = ggufList(entries.keys());
      throw new HipAttnError('NOT_FOUND', `${ctx.repo}@${revision}: no file ${file} in the repo${ggufs.length ? ` (its GGUF files: ${ggufs.join(', ')})` : ''}`);
    }
    await ensureFile(ctx, commit, entries.get(file)!);
    return result('gguf', [file], path.join(snapDir, ...file.split('/')));
  }
  if (entries.has('config.json') && (entries.has(INDEX) || entries.has(SINGLE))) {
    if (!entries.has('tokenizer.json')) throw new HipAttnError('TOKENIZER', `${ctx.repo}@${revision}: the repo has no tokenizer.json (only fast-tokenizer files are supported)`);
    const files: string[] = [];
    for (const f of HF_FILES) {
      if (!entries.has(f)) continue;
      await ensureFile(ctx, commit, entries.get(f)!);
      files.push(f);
    }
    // Refuse an unsupported architecture before downloading its weights.
    parseLlamaConfig(await readJson(path.join(snapDir, 'config.json'), `${ctx.repo}/config.json`), `${ctx.repo}/config.json`);
    if (entries.has(INDEX)) {
      await ensureFile(ctx, commit, entries.get(INDEX)!);
      files.push(INDEX);
      for (const shard of await shardsOf(path.join(snapDir, INDEX), `${ctx.repo}/${INDEX}`)) {
        await ensureFile(ctx, commit, fileEntry(ctx, entries, shard, commit, `a shard named by ${INDEX}`));
        files.push(shard);
      }
    } else {
      await ensureFile(ctx, commit, entries.get(SINGLE)!);
      files.push(SINGLE);
    }
    return result('safetensors', files, snapDir);
  }
  const ggufs = ggufList(entries.keys());
  if (ggufs.length === 1) {
    await ensureFile(ctx, commit, entries.get(ggufs[0]!)!);
    return result('gguf', [ggufs[0]!], path.join(snapDir, ...ggufs[0]!.split('/')));
  }
  if (ggufs.length > 1) throw severalGgufs(ctx.repo, ggufs);
  const some = [...entries.keys()].sort().slice(0, 12);
  throw new HipAttnError(
    'MODEL_FORMAT',
    `${ctx.repo}@${revision}: neither config.json with model.safetensors / ${INDEX} nor a .gguf file in the repo (files: ${some.join(', ')}${entries.size > some.length ? ', …' : ''})`,
  );
}

/** The shard files a safetensors index names (validated relative paths), in order. */
async function shardsOf(indexPath: string, where: string): Promise<string[]> {
  const index = await readJson(indexPath, where);
  const map = (index as { weight_map?: unknown } | null)?.weight_map;
  if (typeof map !== 'object' || map === null || Array.isArray(map)) throw new HipAttnError('MODEL_FORMAT', `${where}: "weight_map" is missing or not an object`);
  const shards = new Set<string>();
  for (const [tensor, shard] of Object.entries(map as Record<string, unknown>)) {
    if (typeof shard !== 'string' || !isSafeRelativePath(shard)) throw new HipAttnError('MODEL_FORMAT', `${where}: tensor "${tensor}" maps to an invalid file name ${JSON.stringify(shard)}`);
    shards.add(shard);
  }
  if (shards.size === 0) throw new HipAttnError('MODEL_FORMAT', `${where}: weight_map lists no tensors`);
  return [...shards].sort();
}

/** The cached snapshot for `revision`, or why there is none (no network). */
async function cachedSnapshot(ctx: Ctx, revision: string, file: string | undefined): Promise<HubSnapshot | string> {
  let commit: string;
  if (COMMIT.test(revision)) {
    commit = revision;
  } else {
    const ref = path.join(ctx.repoDir, 'refs', ...revision.split('/'));
    try {
      commit = (await readFile(ref, 'utf8')).trim();
    } catch {
      return `no ${path.relative(ctx.cacheDir, ref)}`;
    }
    if (!isSafeRelativePath(commit) || commit.includes('/')) return `${ref} does not hold a commit hash`;
  }
  const snapDir = path.join(ctx.repoDir, 'snapshots', commit);
  if (!(await isDir(snapDir))) return `no snapshot ${commit}`;
  const has = (f: string) => isFile(path.join(snapDir, ...f.split('/')));
  const result = (format: 'safetensors' | 'gguf', files: string[], p: string): HubSnapshot => ({ path: p, format, repo: ctx.repo, revision, commit, cacheDir: ctx.cacheDir, files, fromCache: true });
  if (file !== undefined) return (await has(file)) ? result('gguf', [file], path.join(snapDir, ...file.split('/'))) : `snapshot ${commit} has no ${file}`;
  if (await has('config.json')) {
    const files: string[] = [];
    for (const f of HF_FILES) if (await has(f)) files.push(f);
    if (await has(INDEX)) {
      const shards = await shardsOf(path.join(snapDir, INDEX), path.join(snapDir, INDEX));
      const missing: string[] = [];
      for (const s of shards) if (!(await has(s))) missing.push(s);
      if (missing.length) return `snapshot ${commit} lacks the shards ${missing.join(', ')}`;
      return result('safetensors', [...files, INDEX, ...shards], snapDir);
    }
    if (await has(SINGLE)) return result('safetensors', [...files, SINGLE], snapDir);
  }
  const ggufs = ggufList(await listFilesIn(snapDir));
  if (ggufs.length === 1) return result('gguf', ggufs, path.join(snapDir, ...ggufs[0]!.split('/')));
  if (ggufs.length > 1) throw severalGgufs(ctx.repo, ggufs);
  return `snapshot ${commit} has no complete model (config.json with ${SINGLE} or ${INDEX} and its shards, or a .gguf file)`;
}

/** Repo-relative paths of the files (and symlinks to files) below `dir`. */
async function listFilesIn(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const d of await readdir(dir, { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${d.name}` : d.name;
    if (d.isDirectory()) out.push(...(await listFilesIn(path.join(dir, d.name), rel)));
    else if (await isFile(path.join(dir, d.name))) out.push(rel);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Files and blobs

/** Makes `snapshots/<commit>/<path>` exist, downloading its blob if needed. */
async function ensureFile(ctx: Ctx, commit: string, entry: ListFileEntry): Promise<void> {
  if (!isSafeRelativePath(entry.path)) throw new HipAttnError('MODEL_FORMAT', `${ctx.repo}: the Hub lists an invalid file name ${JSON.stringify(entry.path)}`);
  const etag = entry.lfs?.oid ?? entry.oid;
  if (!etag || !/^[A-Za-z0-9_-]+$/.test(etag)) throw new HipAttnError('MODEL_FORMAT', `${ctx.repo}: the Hub lists no usable oid for ${entry.path}`);
  const size = entry.lfs?.size ?? entry.size;
  const pointer = path.join(ctx.repoDir, 'snapshots', commit, ...entry.path.split('/'));
  if (await isFile(pointer)) return;
  const blob = path.join(ctx.repoDir, 'blobs', etag);
  if ((await fileSize(blob)) !== size) await downloadBlob(ctx, commit, entry, blob, size);
  await linkPointer(blob, pointer);
}

class Retryable extends Error {}

async function downloadBlob(ctx: Ctx, commit: string, entry: ListFileEntry, blob: string, size: number): Promise<void> {
  await mkdir(path.dirname(blob), { recursive: true });
  for (let attempt = 0; ; attempt++) {
    try {
      await downloadAttempt(ctx, commit, entry, blob, size);
      return;
    } catch (e) {
      if (!(e instanceof Retryable)) throw e;
      if (attempt >= ctx.retries) {
        const partial = (await fileSize(`${blob}.incomplete`)) ?? 0;
        throw new HipAttnError(
          'NETWORK',
          `${ctx.repo}: downloading ${entry.path} failed after ${attempt + 1} attempt(s) (${e.message}); ${partial} of ${size} bytes are kept in ${blob}.incomplete and the next attempt resumes from there`,
          { cause: e.cause ?? e },
        );
      }
      await new Promise((r) => setTimeout(r, Math.min(200 * 2 ** attempt, 5000)));
    }
  }
}

interface Hasher {
  update(b: Uint8Array): void;
  check(): string | undefined;
}

/** LFS files: sha256 = lfs.oid; plain git files: sha1("blob <size>\0" + bytes) = oid. */
function hasherFor(entry: ListFileEntry, size: number): Hasher {
  if (entry.lfs) {
    const h = createHash('sha256');
    const want = entry.lfs.oid.toLowerCase();
    return {
      update: (b) => h.update(b),
      check: () => {
        const got = h.digest('hex');
        return got === want ? undefined : `sha256 ${got}, expected ${want}`;
      },
    };
  }
  if (!/^[0-9a-f]{40}$/i.test(entry.oid ?? '')) return { update() {}, check: () => undefined };
  const h = createHash('sha1').update(`blob ${size}\0`);
  const want = entry.oid!.toLowerCase();
  return {
    update: (b) => h.update(b),
    check: () => {
      const got = h.digest('hex');
      return got === want ? undefined : `git blob sha1 ${got}, expected ${want}`;
    },
  };
}

const HOST = hostname().replace(/[^A-Za-z0-9_.]/g, '_') || 'host';

async function downloadAttempt(ctx: Ctx, commit: string, entry: ListFileEntry, blob: string, size: number): Promise<void> {
  const tmp = `${blob}.incomplete.hipattn-${process.pid}-${randomBytes(4).toString('hex')}-${HOST}`;
  await claimPartial(blob, tmp);
  let offset = (await fileSize(tmp)) ?? 0;
  if (offset > size) {
    await writeFile(tmp, new Uint8Array(0));
    offset = 0;
  }
  let hasher = hasherFor(entry, size);
  if (offset > 0) {
    for await (const chunk of createReadStream(tmp, { start: 0, end: offset - 1 })) hasher.update(chunk as Buffer);
  }
  const fh = await open(tmp, 'r+');
  let closed = false;
  let discard = false;
  let done = false;
  let pos = offset;
  try {
    if (pos < size) {
      let status = 0;
      let contentRange: string | null = null;
      const base = ctx.fetch ?? globalThis.fetch;
      const watched: typeof fetch = async (input, init) => {
        const res = await base(input, init);
        status = res.status;
        contentRange = res.headers.get('content-range');
        return res;
      };
      const url = `${ctx.hubUrl}/${ctx.repo}/resolve/${commit}/${entry.path.split('/').map(encodeURIComponent).join('/')}`;
      const etag = path.basename(blob);
      const web = await downloadFile({ repo: { type: 'model', name: ctx.repo }, path: entry.path, revision: commit, ...apiParams(ctx), fetch: watched, xet: false, downloadInfo: { size, etag, url } });
      if (!web) throw new HipAttnError('NOT_FOUND', `${ctx.repo}@${commit}: ${entry.path} not found`);
      const reader = (pos > 0 ? web.slice(pos) : web).stream().getReader();
      let first = true;
      let lastReport = 0;
      const report = (force: boolean) => {
        const now = Date.now();
        if (ctx.onProgress && (force || now - lastReport >= PROGRESS_INTERVAL_MS)) {
          lastReport = now;
          ctx.onProgress({ stage: 'download', item: entry.path, loaded: pos, total: size });
        }
      };
      report(true);
      for (;;) {
        let r: ReadableStreamReadResult<Uint8Array>;
        try {
          r = await reader.read();
        } catch (e) {
          if (status >= 400 && status !== 408 && status !== 429 && status < 500) {
            throw new HipAttnError(status === 404 ? 'NOT_FOUND' : 'NETWORK', `${ctx.repo}@${commit}: downloading ${entry.path}: HTTP ${status} (${describe(e)})`, { cause: e });
          }
          throw new Retryable(`${describe(e)}${status ? ` (HTTP ${status})` : ''}`, { cause: e });
        }
        if (first) {
          first = false;
          if (offset > 0 && status === 200) {
            // The server ignored the Range request and sends the whole file: start over.
            pos = 0;
            hasher = hasherFor(entry, size);
            await fh.truncate(0);
          } else if (offset > 0 && status === 206) {
            const start = /bytes (\d+)-/.exec(contentRange ?? '');
            if (!start || Number(start[1]) !== offset) {
              throw new Retryable(`asked for bytes from ${offset}, the server answered with range ${String(contentRange)}`);
            }
          }
        }
        if (r.done) break;
        const chunk = r.value;
        if (pos + chunk.byteLength > size) {
          discard = true;
          throw new HipAttnError('INTEGRITY', `${ctx.repo}@${commit}: ${entry.path} is longer than the ${size} bytes the Hub lists; the download was discarded`);
        }
        let written = 0;
        while (written < chunk.byteLength) {
          const { bytesWritten } = await fh.write(chunk, written, chunk.byteLength - written, pos + written);
          written += bytesWritten;
        }
        pos += chunk.byteLength;
        hasher.update(chunk);
        report(false);
      }
      if (pos < size) throw new Retryable(`the connection ended after ${pos} of ${size} bytes`);
      report(true);
    }
    await fh.datasync();
    await fh.close();
    closed = true;
    const bad = hasher.check();
    if (bad !== undefined) {
      discard = true;
      throw new HipAttnError('INTEGRITY', `${ctx.repo}@${commit}: ${entry.path} failed verification (${bad}); the download was discarded, try again`);
    }
    await rename(tmp, blob);
    done = true;
  } finally {
    if (!closed) await fh.close().catch(() => {});
    if (!done) {
      if (discard) await rm(tmp, { force: true });
      else await parkPartial(blob, tmp);
    }
  }
}

/** Takes `<blob>.incomplete` (or an abandoned private partial file) as `tmp`, or creates an empty `tmp`. */
async function claimPartial(blob: string, tmp: string): Promise<void> {
  try {
    await rename(`${blob}.incomplete`, tmp);
    return;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  const dir = path.dirname(blob);
  const prefix = `${path.basename(blob)}.incomplete.hipattn-`;
  const orphans: { file: string; size: number }[] = [];
  for (const name of await readdir(dir)) {
    if (!name.startsWith(prefix)) continue;
    const m = /^(\d+)-[0-9a-f]+-(.+)$/.exec(name.slice(prefix.length));
    if (!m) continue;
    const file = path.join(dir, name);
    const st = await stat(file).catch(() => undefined);
    if (!st) continue;
    const pid = Number(m[1]);
    const abandoned = m[2] === HOST ? pid !== process.pid && !processAlive(pid) : Date.now() - st.mtimeMs > FOREIGN_ORPHAN_MS;
    if (abandoned) orphans.push({ file, size: st.size });
  }
  orphans.sort((a, b) => b.size - a.size);
  for (const o of orphans) {
    try {
      await rename(o.file, tmp);
      return;
    } catch {
      // another process adopted it first
    }
  }
  await writeFile(tmp, new Uint8Array(0), { flag: 'wx' });
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/** Puts a partial download back as `<blob>.incomplete` for the next attempt (keeping the longer of two). */
async function parkPartial(blob: string, tmp: string): Promise<void> {
  const mine = await fileSize(tmp);
  if (mine === undefined) return;
  const other = await fileSize(`${blob}.incomplete`);
  if (mine === 0 || (other !== undefined && other >= mine)) await rm(tmp, { force: true });
  else await rename(tmp, `${blob}.incomplete`);
}

/** `pointer` → relative symlink to `blob`, replaced atomically (a copy where symlinks are not allowed). */
async function linkPointer(blob: string, pointer: string): Promise<void> {
  await mkdir(path.dirname(pointer), { recursive: true });
  const tmp = `${pointer}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await symlink(path.relative(path.dirname(pointer), blob), tmp);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EPERM' && code !== 'EACCES' && code !== 'ENOTSUP' && code !== 'EINVAL') throw e;
    await copyFile(blob, tmp);
  }
  await rename(tmp, pointer);
}

async function writeAtomic(file: string, text: string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  await writeFile(tmp, text);
  await rename(tmp, file);
}

// ---------------------------------------------------------------------------------------------
// Small helpers

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

async function isFile(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isFile();
  } catch {
    return false;
  }
}

async function isDir(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isDirectory();
  } catch {
    return false;
  }
}

async function fileSize(p: string): Promise<number | undefined> {
  try {
    const st = await stat(p);
    return st.isFile() ? st.size : undefined;
  } catch {
    return undefined;
  }
}

async function readJson(file: string, where: string): Promise<unknown> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as unknown;
  } catch (e) {
    throw new HipAttnError('MODEL_FORMAT', `${where}: not valid JSON (${describe(e)})`, { cause: e });
  }
}

function describe(e: unknown): string {
  if (e instanceof Error) {
    const cause = (e as { cause?: unknown }).cause;
    const c = cause instanceof Error ? `: ${(cause as NodeJS.ErrnoException).code ?? cause.message}` : '';
    return `${e.message}${c}`;
  }
  return String(e);
}

/** Failures to reach the Hub (fetch throwing, 5xx, 408, 429), as opposed to answers such as 404. */
function isNetworkError(e: unknown): boolean {
  if (e instanceof HubApiError) return e.statusCode >= 500 || e.statusCode === 408 || e.statusCode === 429;
  if (e instanceof HipAttnError) return false;
  return e instanceof Error && (e.name === 'TypeError' || e.name === 'AbortError' || e.name === 'TimeoutError' || typeof (e as NodeJS.ErrnoException).code === 'string');
}

function hubError(ctx: Ctx, revision: string, e: unknown): Error {
  if (e instanceof HipAttnError) return e;
  if (e instanceof HubApiError) {
    const s = e.statusCode;
    if (s === 401 || s === 403 || s === 404) {
      const hint = ctx.accessToken ? '' : ' (private or gated repos need a token: set HF_TOKEN or hub.accessToken)';
      return new HipAttnError('NOT_FOUND', `${ctx.repo}@${revision}: the Hugging Face Hub answered HTTP ${s}: ${e.message}${hint}`, { cause: e });
    }
    return new HipAttnError('NETWORK', `${ctx.repo}@${revision}: the Hugging Face Hub answered HTTP ${s}: ${e.message}`, { cause: e });
  }
  return new HipAttnError('NETWORK', `${ctx.repo}@${revision}: unexpected answer from the Hugging Face Hub (${describe(e)})`, { cause: e });
}
