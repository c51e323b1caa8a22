/**
 * Hub ids and the Hugging Face cache. The real Hub cannot be reached from CI, so every test here
 * runs against test/fake-hub.ts: a local node:http server on 127.0.0.1 implementing the
 * endpoints @huggingface/hub calls (model info, tree listing, resolve with Range), serving the
 * repo's shipped models.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, readlink, stat, writeFile, mkdir } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { scanCacheDir } from '@huggingface/hub';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HipAttnError, HubCacheMissError } from '../errors.js';
import { writeSafetensors } from '../model/safetensors.js';
import { type FakeFile, FakeHub, commitId, gitBlobSha1, sha256 } from '../../test/fake-hub.js';
import { downloadHubModel, parseHubId, repoCacheDir, resolveModelPath } from './hub.js';
import { type LoadModelOptions, type LoadProgressEvent, loadModel } from './load.js';

const ROOT = join(import.meta.dirname, '..', '..');
const MINI = join(ROOT, 'models', 'hip-testbed-mini');
const GGUF = join(ROOT, 'models', 'stories260K', 'stories260K.gguf');
const C1 = commitId('mini-1');
const C2 = commitId('mini-2');
const LOADED = ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json'];
const IDS = [0, 17, 342, 100, 5, 77, 300, 411];

let hub: FakeHub;
let miniFiles: FakeFile[];
let safetensors: Uint8Array;
let gguf: Uint8Array;

async function cacheDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'hipattn-hub-'));
}

function hubOpts(cache: string, extra: Record<string, unknown> = {}) {
  return { cacheDir: cache, hubUrl: hub.url, ...extra };
}

async function logits(source: string, options: LoadModelOptions = {}): Promise<Float32Array> {
  const model = await loadModel(source, { device: 'cpu', attention: 'dense', contextLength: 64, ...options });
  try {
    return await model.forward(IDS, { logits: 'all' });
  } finally {
    await model.dispose();
  }
}

const localLogits = new Map<string, Promise<Float32Array>>();
/** Logits of a local model (computed once per file). */
function local(source: string): Promise<Float32Array> {
  if (!localLogits.has(source)) localLogits.set(source, logits(source));
  return localLogits.get(source)!;
}

/** Splits a safetensors file in two shards and an index (the bytes of every tensor unchanged). */
function shard(bytes: Uint8Array): FakeFile[] {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const names = Object.keys(header).filter((k) => k !== '__metadata__');
  const tensors = names.map((name) => {
    const t = header[name]!;
    return { name, dtype: t.dtype, shape: t.shape, data: bytes.subarray(8 + n + t.data_offsets[0], 8 + n + t.data_offsets[1]) };
  });
  const half = Math.ceil(tensors.length / 2);
  const parts = [tensors.slice(0, half), tensors.slice(half)];
  const shardNames = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'];
  const weightMap: Record<string, string> = {};
  parts.forEach((p, i) => p.forEach((t) => (weightMap[t.name] = shardNames[i]!)));
  return [
    ...parts.map((p, i) => ({ path: shardNames[i]!, bytes: writeSafetensors(p), lfs: true })),
    { path: 'model.safetensors.index.json', bytes: new TextEncoder().encode(JSON.stringify({ metadata: {}, weight_map: weightMap })) },
  ];
}

beforeAll(async () => {
  hub = await FakeHub.start();
  miniFiles = [];
  for (const name of (await readdir(MINI)).sort()) {
    const bytes = new Uint8Array(await readFile(join(MINI, name)));
    miniFiles.push({ path: name, bytes, lfs: name.endsWith('.safetensors') });
    if (name === 'model.safetensors') safetensors = bytes;
  }
  const changedGen = new TextEncoder().encode(JSON.stringify({ bos_token_id: 0, eos_token_id: 1, temperature: 0.25 }));
  hub.addCommit('hip/testbed-mini', C2, [...miniFiles.filter((f) => f.path !== 'generation_config.json'), { path: 'generation_config.json', bytes: changedGen }], ['v2', 'dev']);
  hub.addCommit('hip/testbed-mini', C1, [...miniFiles, { path: 'nested/notes.txt', bytes: new TextEncoder().encode('not needed') }], ['main', 'v1']);
  hub.addCommit('hip/testbed-mini-sharded', commitId('sharded'), [...miniFiles.filter((f) => f.path !== 'model.safetensors'), ...shard(safetensors)]);
  gguf = new Uint8Array(await readFile(GGUF));
  const readme = { path: 'README.md', bytes: new TextEncoder().encode('# a GGUF repo\n') };
  hub.addCommit('ggml/stories260K', commitId('gguf'), [readme, { path: 'stories260K.gguf', bytes: gguf, lfs: true }]);
  hub.addCommit('ggml/multi', commitId('multi'), [readme, { path: 'a.gguf', bytes: gguf, lfs: true }, { path: 'q/b.gguf', bytes: gguf, lfs: true }]);
  hub.addCommit('hip/no-model', commitId('none'), [readme]);
});

afterAll(async () => {
  await hub?.close();
});

describe('parseHubId', () => {
  it('reads org/name, @revision and a GGUF file, and rejects paths', () => {
    expect(parseHubId('org/name')).toEqual({ repo: 'org/name' });
    expect(parseHubId('Org-1/na.me_2@v1.0')).toEqual({ repo: 'Org-1/na.me_2', revision: 'v1.0' });
    expect(parseHubId('org/name/model-Q8_0.gguf')).toEqual({ repo: 'org/name', file: 'model-Q8_0.gguf' });
    expect(parseHubId('org/name@abc/sub/m.GGUF')).toEqual({ repo: 'org/name', revision: 'abc', file: 'sub/m.GGUF' });
    expect(parseHubId('org/name@refs%2Fpr%2F1')).toEqual({ repo: 'org/name', revision: 'refs/pr/1' });
    for (const bad of ['name', './org/name', '/abs/path', 'org/name/', 'a/b/c', 'org/name/x.safetensors', 'org/na--me', 'org/../x.gguf', 'C:\\models\\x', 'org/name@', 'org/name/../x.gguf', '-org/name']) {
      expect(parseHubId(bad), bad).toBeUndefined();
    }
  });
});

describe('Hub ids through loadModel (fake Hub on 127.0.0.1)', () => {
  it('downloads only what loading needs, with progress, and gives the logits of the local directory', async () => {
    const cache = await cacheDir();
    const events: LoadProgressEvent[] = [];
    const before = hub.log.length;
    const got = await logits('hip/testbed-mini', { hub: hubOpts(cache), onProgress: (e) => events.push(e) });
    expect(got).toEqual(await local(MINI));

    const requested = new Set(hub.log.slice(before).filter((r) => r.path.includes('/resolve/')).map((r) => r.path.split('/').pop()));
    expect([...requested].sort()).toEqual(LOADED);
    const tree = hub.log.slice(before).filter((r) => r.path.includes('/tree/'));
    expect(tree.length).toBeGreaterThan(1); // paginated through Link headers
    expect(tree[0]!.path).toContain(`/tree/${C1}`); // listed at the resolved commit

    const downloads = events.filter((e) => e.stage === 'download');
    for (const file of LOADED) {
      const mine = downloads.filter((e) => e.item === file);
      const size = miniFiles.find((f) => f.path === file)!.bytes.byteLength;
      expect(mine.length, file).toBeGreaterThanOrEqual(2);
      for (let i = 1; i < mine.length; i++) expect(mine[i]!.loaded).toBeGreaterThanOrEqual(mine[i - 1]!.loaded);
      expect(mine.every((e) => e.total === size)).toBe(true);
      expect(mine.at(-1)!.loaded).toBe(size);
    }
    expect(downloads.length).toBeLessThan(200); // throttled
    expect(events.findIndex((e) => e.stage === 'weights')).toBeGreaterThan(events.findLastIndex((e) => e.stage === 'download'));
  });

  it('writes the standard cache layout, readable by scanCacheDir, and then works offline with zero requests', async () => {
    const cache = await cacheDir();
    const snap = await downloadHubModel('hip/testbed-mini', hubOpts(cache));
    expect(snap).toMatchObject({ repo: 'hip/testbed-mini', revision: 'main', commit: C1, format: 'safetensors', fromCache: false });
    const repoDir = repoCacheDir(cache, 'hip/testbed-mini');
    expect(repoDir).toBe(join(cache, 'models--hip--testbed-mini'));
    expect(snap.path).toBe(join(repoDir, 'snapshots', C1));
    expect(await readFile(join(repoDir, 'refs', 'main'), 'utf8')).toBe(C1);
    expect(await readlink(join(snap.path, 'model.safetensors'))).toBe(join('..', '..', 'blobs', sha256(safetensors)));
    const config = miniFiles.find((f) => f.path === 'config.json')!.bytes;
    expect(await readlink(join(snap.path, 'config.json'))).toBe(join('..', '..', 'blobs', gitBlobSha1(config)));
    expect((await readdir(join(repoDir, 'blobs'))).filter((f) => f.includes('incomplete'))).toEqual([]);

    const scan = await scanCacheDir(cache);
    expect(scan.warnings).toEqual([]);
    expect(scan.repos).toHaveLength(1);
    const repo = scan.repos[0]!;
    expect(repo.id).toEqual({ name: 'hip/testbed-mini', type: 'model' });
    expect(repo.filesCount).toBe(LOADED.length);
    expect(repo.size).toBe(LOADED.reduce((s, f) => s + miniFiles.find((m) => m.path === f)!.bytes.byteLength, 0));
    expect(repo.revisions).toHaveLength(1);
    expect(repo.revisions[0]!.commitOid).toBe(C1);
    expect(repo.revisions[0]!.refs).toEqual(['main']);
    expect(repo.revisions[0]!.files.map((f) => f.path.split('/').pop()).sort()).toEqual(LOADED);

    const before = hub.log.length;
    const noNetwork: typeof fetch = () => Promise.reject(new Error('offline mode must not fetch'));
    const offline = await downloadHubModel('hip/testbed-mini', hubOpts(cache, { offline: true, fetch: noNetwork }));
    expect(offline).toMatchObject({ path: snap.path, commit: C1, fromCache: true });
    expect(await logits('hip/testbed-mini', { hub: hubOpts(cache, { offline: true, fetch: noNetwork }) })).toEqual(await local(MINI));
    expect(hub.log.length).toBe(before);
  });

  it('offline with an empty cache throws HubCacheMissError naming the repo, revision and cache', async () => {
    const cache = await cacheDir();
    const before = hub.log.length;
    const err = await loadModel('hip/testbed-mini@v1', { device: 'cpu', hub: hubOpts(cache, { offline: true }) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HubCacheMissError);
    expect(err).toMatchObject({ code: 'NOT_FOUND', repo: 'hip/testbed-mini', revision: 'v1', cacheDir: cache });
    expect((err as Error).message).toContain('hip/testbed-mini@v1');
    expect((err as Error).message).toContain(cache);
    expect(hub.log.length).toBe(before);
  });

  it('falls back to the cached snapshot, with a warning, when the Hub cannot be reached', async () => {
    const cache = await cacheDir();
    await downloadHubModel('hip/testbed-mini', hubOpts(cache));
    const warnings: string[] = [];
    const down = 'http://127.0.0.1:1';
    const snap = await downloadHubModel('hip/testbed-mini', { cacheDir: cache, hubUrl: down, onWarning: (m) => warnings.push(m) });
    expect(snap).toMatchObject({ commit: C1, fromCache: true });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/cannot be reached.*using the cached snapshot/);
    const err = await downloadHubModel('hip/testbed-mini@v2', { cacheDir: cache, hubUrl: down, onWarning: () => {} }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'NETWORK' });
    expect((err as Error).message).toMatch(/cannot be reached.*no snapshot/);
  });

  it('resumes an interrupted download with a Range request from the partial size', async () => {
    const cache = await cacheDir();
    const size = safetensors.byteLength;
    hub.cuts.set('model.safetensors', { after: 3_000_000, times: 1 });
    const before = hub.log.length;
    const err = await downloadHubModel('hip/testbed-mini', hubOpts(cache, { retries: 0 })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HipAttnError);
    expect(err).toMatchObject({ code: 'NETWORK' });
    const repoDir = repoCacheDir(cache, 'hip/testbed-mini');
    const blob = join(repoDir, 'blobs', sha256(safetensors));
    const partial = (await stat(`${blob}.incomplete`)).size;
    expect(partial).toBeGreaterThan(0);
    expect(partial).toBeLessThanOrEqual(3_000_000);
    expect(existsSync(blob)).toBe(false);
    expect(existsSync(join(repoDir, 'refs', 'main'))).toBe(false); // a ref only points at complete snapshots
    expect((err as Error).message).toContain(`${partial} of ${size} bytes`);

    await downloadHubModel('hip/testbed-mini', hubOpts(cache));
    const gets = hub.log.slice(before).filter((r) => r.path.endsWith('/resolve/main/model.safetensors') || r.path.endsWith(`/resolve/${C1}/model.safetensors`));
    expect(gets.map((r) => r.range)).toEqual([undefined, `bytes=${partial}-${size - 1}`]);
    expect(gets[1]!.status).toBe(206);
    expect(gets[1]!.sent).toBe(size - partial);
    expect(sha256(new Uint8Array(await readFile(blob)))).toBe(sha256(safetensors));
    expect(existsSync(`${blob}.incomplete`)).toBe(false);
    expect(await readFile(join(repoDir, 'refs', 'main'), 'utf8')).toBe(C1);
  });

  it('retries within one call, resuming, and adopts the partial file of a process that died', async () => {
    const size = safetensors.byteLength;
    let cache = await cacheDir();
    hub.cuts.set('model.safetensors', { after: 1_000_000, times: 1 });
    let before = hub.log.length;
    await downloadHubModel('hip/testbed-mini', hubOpts(cache));
    let gets = hub.log.slice(before).filter((r) => r.path.endsWith('/model.safetensors'));
    expect(gets).toHaveLength(2);
    expect(gets[1]!.range).toMatch(/^bytes=\d+-/);
    expect(Number(/bytes=(\d+)-/.exec(gets[1]!.range!)![1])).toBeGreaterThan(0);

    // A private partial file left by a killed process (pid beyond pid_max) on this host is resumed.
    cache = await cacheDir();
    const blobs = join(repoCacheDir(cache, 'hip/testbed-mini'), 'blobs');
    await mkdir(blobs, { recursive: true });
    const host = hostname().replace(/[^A-Za-z0-9_.]/g, '_') || 'host';
    await writeFile(join(blobs, `${sha256(safetensors)}.incomplete.hipattn-${2 ** 23 + 7}-abcd1234-${host}`), safetensors.subarray(0, 123_456));
    before = hub.log.length;
    await downloadHubModel('hip/testbed-mini', hubOpts(cache));
    gets = hub.log.slice(before).filter((r) => r.path.endsWith('/model.safetensors'));
    expect(gets.map((r) => r.range)).toEqual([`bytes=123456-${size - 1}`]);
    expect((await readdir(blobs)).filter((f) => f.includes('incomplete'))).toEqual([]);
  });

  it('starts over when the server ignores the Range request', async () => {
    const cache = await cacheDir();
    const blobs = join(repoCacheDir(cache, 'hip/testbed-mini'), 'blobs');
    await mkdir(blobs, { recursive: true });
    await writeFile(join(blobs, `${sha256(safetensors)}.incomplete`), safetensors.subarray(0, 50_000));
    hub.ignoreRange = true;
    const events: { loaded: number; total: number; item: string }[] = [];
    try {
      const snap = await downloadHubModel('hip/testbed-mini', { ...hubOpts(cache), onProgress: (e) => events.push(e) });
      expect(sha256(new Uint8Array(await readFile(join(snap.path, 'model.safetensors'))))).toBe(sha256(safetensors));
    } finally {
      hub.ignoreRange = false;
    }
    expect(events.filter((e) => e.item === 'model.safetensors').at(-1)).toMatchObject({ loaded: safetensors.byteLength, total: safetensors.byteLength });
  });

  it('rejects a corrupted body (wrong sha256) and keeps nothing of it', async () => {
    const cache = await cacheDir();
    hub.corrupt.add('model.safetensors');
    try {
      const err = await downloadHubModel('hip/testbed-mini', hubOpts(cache)).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'INTEGRITY' });
      expect((err as Error).message).toMatch(/model\.safetensors failed verification \(sha256 [0-9a-f]{64}, expected [0-9a-f]{64}\)/);
    } finally {
      hub.corrupt.delete('model.safetensors');
    }
    const repoDir = repoCacheDir(cache, 'hip/testbed-mini');
    const blobs = await readdir(join(repoDir, 'blobs'));
    expect(blobs.filter((b) => b.startsWith(sha256(safetensors)))).toEqual([]);
    expect(existsSync(join(repoDir, 'snapshots', C1, 'model.safetensors'))).toBe(false);
    expect(existsSync(join(repoDir, 'refs', 'main'))).toBe(false);
    const snap = await downloadHubModel('hip/testbed-mini', hubOpts(cache));
    expect(sha256(new Uint8Array(await readFile(join(snap.path, 'model.safetensors'))))).toBe(sha256(safetensors));
  });

  it('pins revisions: tags, branches and commits, sharing blobs between snapshots', async () => {
    const cache = await cacheDir();
    const before = hub.log.length;
    const v2 = await downloadHubModel('hip/testbed-mini@v2', hubOpts(cache));
    expect(v2.commit).toBe(C2);
    expect(JSON.parse(await readFile(join(v2.path, 'generation_config.json'), 'utf8'))).toMatchObject({ temperature: 0.25 });
    const main = await downloadHubModel('hip/testbed-mini', hubOpts(cache));
    expect(main.commit).toBe(C1);
    expect(JSON.parse(await readFile(join(main.path, 'generation_config.json'), 'utf8'))).not.toHaveProperty('temperature');
    const dev = await downloadHubModel('hip/testbed-mini', hubOpts(cache, { revision: 'dev' }));
    expect(dev.path).toBe(v2.path);
    const repoDir = repoCacheDir(cache, 'hip/testbed-mini');
    expect(await readFile(join(repoDir, 'refs', 'v2'), 'utf8')).toBe(C2);
    expect(await readFile(join(repoDir, 'refs', 'dev'), 'utf8')).toBe(C2);
    expect(await readFile(join(repoDir, 'refs', 'main'), 'utf8')).toBe(C1);
    // The weights are one blob, downloaded once.
    expect(hub.log.slice(before).filter((r) => r.path.endsWith('/model.safetensors'))).toHaveLength(1);

    // A cached commit hash needs no request at all, even online.
    const n = hub.log.length;
    const pinned = await downloadHubModel(`hip/testbed-mini@${C2}`, hubOpts(cache));
    expect(pinned).toMatchObject({ path: v2.path, fromCache: true });
    expect(hub.log.length).toBe(n);
    const scan = await scanCacheDir(cache);
    expect(scan.warnings).toEqual([]);
    expect(scan.repos[0]!.revisions.map((r) => [r.commitOid, [...r.refs].sort()]).sort()).toEqual([
      [C1, ['main']],
      [C2, ['dev', 'v2']],
    ].sort());

    await expect(downloadHubModel('hip/testbed-mini@v2', hubOpts(cache, { revision: 'main' }))).rejects.toMatchObject({ code: 'INVALID_OPTION' });
    await expect(downloadHubModel('hip/testbed-mini@nope', hubOpts(cache))).rejects.toMatchObject({ code: 'NOT_FOUND', message: expect.stringMatching(/Invalid rev id: nope/) });
  });

  it('loads a GGUF repo, picks a GGUF file by id, and lists them when the choice is ambiguous', async () => {
    const cache = await cacheDir();
    const snap = await downloadHubModel('ggml/stories260K', hubOpts(cache));
    expect(snap.format).toBe('gguf');
    expect(snap.path).toBe(join(repoCacheDir(cache, 'ggml/stories260K'), 'snapshots', commitId('gguf'), 'stories260K.gguf'));
    expect(hub.log.some((r) => r.path.endsWith('/README.md'))).toBe(false);
    expect(await logits('ggml/stories260K', { hub: hubOpts(cache) })).toEqual(await local(GGUF));

    const err = await downloadHubModel('ggml/multi', hubOpts(cache)).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'INVALID_OPTION' });
    expect((err as Error).message).toContain('ggml/multi/a.gguf, ggml/multi/q/b.gguf');
    expect((err as Error).message).toContain('ggml/multi/FILE.gguf');
    const b = await downloadHubModel('ggml/multi@main/q/b.gguf', hubOpts(cache));
    expect(b.path).toBe(join(repoCacheDir(cache, 'ggml/multi'), 'snapshots', commitId('multi'), 'q', 'b.gguf'));
    expect(await readFile(join(repoCacheDir(cache, 'ggml/multi'), 'refs', 'main'), 'utf8')).toBe(commitId('multi'));
    await expect(downloadHubModel('ggml/multi/c.gguf', hubOpts(cache))).rejects.toMatchObject({ code: 'NOT_FOUND', message: expect.stringContaining('a.gguf, q/b.gguf') });
    // Offline, the file id resolves too; the ambiguous repo id is still refused.
    expect((await downloadHubModel('ggml/multi/q/b.gguf', hubOpts(cache, { offline: true }))).path).toBe(b.path);
    await expect(downloadHubModel('ggml/multi/a.gguf', hubOpts(cache, { offline: true }))).rejects.toBeInstanceOf(HubCacheMissError);
  });

  it('loads a sharded checkpoint (index + shards) with the same logits', async () => {
    const cache = await cacheDir();
    const snap = await downloadHubModel('hip/testbed-mini-sharded', hubOpts(cache));
    expect(snap.files).toEqual([
      'config.json',
      'generation_config.json',
      'tokenizer.json',
      'tokenizer_config.json',
      'model.safetensors.index.json',
      'model-00001-of-00002.safetensors',
      'model-00002-of-00002.safetensors',
    ]);
    expect(await logits('hip/testbed-mini-sharded', { hub: hubOpts(cache, { offline: true }) })).toEqual(await local(MINI));
  });

  it('passes the access token (option or HF_TOKEN), and explains unknown repos', async () => {
    const cache = await cacheDir();
    let before = hub.log.length;
    await downloadHubModel('ggml/stories260K', hubOpts(cache, { accessToken: 'hf_option' }));
    expect(hub.log.slice(before).every((r) => r.authorization === 'Bearer hf_option')).toBe(true);
    const saved = process.env.HF_TOKEN;
    process.env.HF_TOKEN = 'hf_from_env';
    try {
      before = hub.log.length;
      await downloadHubModel('ggml/stories260K@main', hubOpts(await cacheDir()));
      expect(hub.log.length).toBeGreaterThan(before);
      expect(hub.log.slice(before).every((r) => r.authorization === 'Bearer hf_from_env')).toBe(true);
    } finally {
      if (saved === undefined) delete process.env.HF_TOKEN;
      else process.env.HF_TOKEN = saved;
    }
    await expect(downloadHubModel('ggml/stories260K', hubOpts(cache, { accessToken: 'nope' }))).rejects.toMatchObject({ code: 'INVALID_OPTION' });
    const err = await loadModel('nobody/nothing', { device: 'cpu', hub: hubOpts(cache) }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'NOT_FOUND' });
    expect((err as Error).message).toMatch(/^nobody\/nothing: no such local path \(.*\), so it was taken as a Hugging Face Hub id: nobody\/nothing@main: .*404.*HF_TOKEN/);
    await expect(downloadHubModel('hip/no-model', hubOpts(cache))).rejects.toMatchObject({ code: 'MODEL_FORMAT', message: expect.stringContaining('README.md') });
  });

  it('prefers existing local paths, and explains strings that are neither', async () => {
    const before = hub.log.length;
    expect(await resolveModelPath(MINI, { hubUrl: hub.url })).toBe(MINI);
    await expect(resolveModelPath(join(tmpdir(), 'no-such-model-dir'))).rejects.toMatchObject({ code: 'NOT_FOUND', message: expect.stringContaining('no such local path') });
    expect(hub.log.length).toBe(before);
  });

  it('keeps two concurrent downloads of the same repo from corrupting each other', async () => {
    const cache = await cacheDir();
    const [a, b] = await Promise.all([downloadHubModel('hip/testbed-mini', hubOpts(cache)), downloadHubModel('hip/testbed-mini', hubOpts(cache))]);
    expect(a.path).toBe(b.path);
    expect(sha256(new Uint8Array(await readFile(join(a.path, 'model.safetensors'))))).toBe(sha256(safetensors));
    const blobs = await readdir(join(repoCacheDir(cache, 'hip/testbed-mini'), 'blobs'));
    expect(blobs.filter((f) => f.includes('incomplete'))).toEqual([]);
    expect(blobs).toHaveLength(LOADED.length);
  });
});

describe('hipattn generate with Hub ids (built CLI, fake Hub)', () => {
  const cli = join(ROOT, 'dist', 'src', 'cli', 'main.js');
  const run = promisify(execFile);
  const hipattn = (args: string[]) => run(process.execPath, [cli, ...args], { maxBuffer: 1 << 24, env: { ...process.env, HF_TOKEN: '' } });

  it.skipIf(!existsSync(join(ROOT, 'dist', 'src', 'runtime', 'hub.js')))('two processes downloading into one cache at once both get a verified model', async () => {
    const cache = await cacheDir();
    const script = `import(${JSON.stringify(join(ROOT, 'dist', 'src', 'runtime', 'hub.js'))}).then((m) => m.downloadHubModel('hip/testbed-mini', { cacheDir: process.argv[1], hubUrl: process.argv[2] })).then((s) => console.log(s.path))`;
    const before = hub.log.length;
    const outs = await Promise.all([0, 1].map(() => run(process.execPath, ['--input-type=module', '-e', script, cache, hub.url], { env: { ...process.env, HF_TOKEN: '' } })));
    expect(outs[0]!.stdout).toBe(outs[1]!.stdout);
    const path = outs[0]!.stdout.trim();
    expect(sha256(new Uint8Array(await readFile(join(path, 'model.safetensors'))))).toBe(sha256(safetensors));
    expect(hub.log.slice(before).filter((r) => r.path.endsWith('/model.safetensors')).length).toBeGreaterThanOrEqual(1);
    const blobs = await readdir(join(repoCacheDir(cache, 'hip/testbed-mini'), 'blobs'));
    expect(blobs.filter((f) => f.includes('incomplete'))).toEqual([]);
    expect((await scanCacheDir(cache)).warnings).toEqual([]);
  });

  it.skipIf(!existsSync(join(ROOT, 'dist', 'src', 'runtime', 'hub.js')))('downloads with --hub-url/--cache-dir, then runs --offline; an empty cache offline exits 2', async () => {
    const cache = await cacheDir();
    const args = ['generate', '--device', 'cpu', '--max-new-tokens', '3', '--temperature', '0', '--prompt', 'The pass key is', '--cache-dir', cache];
    const online = await hipattn([...args, '--model', 'hip/testbed-mini', '--hub-url', hub.url]);
    const before = hub.log.length;
    const offline = await hipattn([...args, '--model', 'hip/testbed-mini', '--offline']);
    expect(offline.stdout).toBe(online.stdout);
    expect(hub.log.length).toBe(before);
    const local = await hipattn([...args, '--model', MINI]);
    expect(local.stdout).toBe(online.stdout);
    const err = await hipattn([...args, '--model', 'hip/testbed-mini', '--revision', 'v1', '--offline', '--cache-dir', await cacheDir()]).catch((e: { code: number; stderr: string }) => e);
    expect((err as { code: number }).code).toBe(2);
    expect((err as { stderr: string }).stderr).toMatch(/hip\/testbed-mini@v1 is not in the Hugging Face cache/);
  });
});
