/**
 * Where a model comes from in the browser: files the user picks or drops (a Hugging Face model
 * directory's files, or one .gguf), or a URL (a model directory served over HTTP, or a .gguf
 * file). Everything ends up as Blobs, which the runtime reads through mapDirectory / blobSource
 * and which the analysis worker receives without a copy.
 */
import type { ModelFiles } from './protocol.js';

export interface FetchProgress {
  file: string;
  /** Bytes of every file so far, and the total where known (0: unknown). */
  loaded: number;
  total: number;
}

/** Files a Hugging Face directory needs, and those it may have. */
const REQUIRED = ['config.json', 'tokenizer.json'];
const OPTIONAL = ['tokenizer_config.json', 'generation_config.json', 'chat_template.jinja', 'special_tokens_map.json'];

/** Groups picked or dropped files into a model (throws with a helpful message when they are not one). */
export function modelFromFiles(list: readonly File[], folderName?: string): ModelFiles {
  const ggufs = list.filter((f) => f.name.toLowerCase().endsWith('.gguf'));
  if (ggufs.length === 1) return { kind: 'gguf', name: ggufs[0]!.name, file: ggufs[0]! };
  if (ggufs.length > 1) throw new Error(`pick one .gguf file, not ${ggufs.length} (${ggufs.map((f) => f.name).join(', ')})`);
  const files = new Map<string, Blob>();
  for (const f of list) {
    // Files of a picked folder carry "folder/sub/name" in webkitRelativePath: keep the path below the folder.
    const rel = (f as File & { webkitRelativePath?: string }).webkitRelativePath || f.name;
    const parts = rel.split('/');
    files.set(parts.length > 1 ? parts.slice(1).join('/') : rel, f);
  }
  const missing = REQUIRED.filter((n) => !files.has(n));
  const hasWeights = [...files.keys()].some((n) => n.endsWith('.safetensors'));
  if (missing.length > 0 || !hasWeights) {
    const need = [...missing, ...(hasWeights ? [] : ['model.safetensors (or an index and its shards)'])];
    throw new Error(`these files are not a model directory: missing ${need.join(', ')} — pick a folder's config.json, tokenizer.json, tokenizer_config.json, generation_config.json and safetensors files, or one .gguf`);
  }
  const first = list[0] as (File & { webkitRelativePath?: string }) | undefined;
  const name = folderName ?? (first?.webkitRelativePath?.split('/')[0] || 'local model');
  return { kind: 'dir', name, files };
}

/** Every file of a drop, walking dropped folders (each file's webkitRelativePath: its path from the dropped item). */
export async function filesFromDrop(dt: DataTransfer): Promise<{ files: File[]; folder?: string }> {
  const entries = [...dt.items].map((i) => i.webkitGetAsEntry?.()).filter((e): e is FileSystemEntry => !!e);
  if (entries.length === 0) return { files: [...dt.files] };
  const out: File[] = [];
  const walk = async (entry: FileSystemEntry, path: string): Promise<void> => {
    if (entry.isFile) {
      const file = await new Promise<File>((res, rej) => (entry as FileSystemFileEntry).file(res, rej));
      Object.defineProperty(file, 'webkitRelativePath', { value: path });
      out.push(file);
      return;
    }
    const reader = (entry as FileSystemDirectoryEntry).createReader();
    for (;;) {
      const batch = await new Promise<FileSystemEntry[]>((res, rej) => reader.readEntries(res, rej));
      if (batch.length === 0) break;
      for (const e of batch) await walk(e, `${path}/${e.name}`);
    }
  };
  for (const e of entries) await walk(e, e.name);
  const folder = entries.length === 1 && entries[0]!.isDirectory ? entries[0]!.name : undefined;
  return folder !== undefined ? { files: out, folder } : { files: out };
}

/** How model files are fetched: an abort signal, and the server's API key (`hipattn serve --api-key`). */
export interface FetchModelOptions {
  signal?: AbortSignal;
  /** Sent as `Authorization: Bearer KEY` (only to the model's own origin). */
  apiKey?: string;
}

function requestInit(url: string, opts: FetchModelOptions): RequestInit {
  const init: RequestInit = opts.signal ? { signal: opts.signal } : {};
  if (opts.apiKey && new URL(url).origin === location.origin) init.headers = { authorization: `Bearer ${opts.apiKey}` };
  return init;
}

async function fetchBlob(url: string, onBytes: (delta: number, total: number) => void, opts: FetchModelOptions): Promise<Blob | undefined> {
  const res = await fetch(url, requestInit(url, opts));
  if (res.status === 404) return undefined;
  if (res.status === 401) throw new Error(`GET ${url}: HTTP 401: the server needs its API key for the model files${opts.apiKey ? ' (the one given is wrong)' : ''}`);
  if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status} ${res.statusText}`);
  const total = Number(res.headers.get('content-length') ?? 0);
  if (!res.body) {
    const b = await res.blob();
    onBytes(b.size, total);
    return b;
  }
  const chunks: Uint8Array[] = [];
  const reader = res.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    onBytes(value.byteLength, total);
  }
  return new Blob(chunks as BlobPart[]);
}

/**
 * Fetches a model from a URL: a .gguf file, or a directory (base URL) with `files.json` (what
 * `hipattn serve --ui` lists at /model/) or the usual Hugging Face file names.
 */
export async function fetchModel(url: string, onProgress: (p: FetchProgress) => void, opts: FetchModelOptions = {}): Promise<ModelFiles> {
  const abs = new URL(url, location.href);
  let loaded = 0;
  let total = 0;
  const get = async (fileUrl: URL, label: string, required: boolean): Promise<Blob | undefined> => {
    let counted = false;
    const blob = await fetchBlob(
      fileUrl.href,
      (delta, size) => {
        if (!counted) {
          total += size;
          counted = true;
        }
        loaded += delta;
        onProgress({ file: label, loaded, total });
      },
      opts,
    );
    if (!blob && required) throw new Error(`${fileUrl.href}: not found (404)`);
    return blob;
  };
  if (abs.pathname.toLowerCase().endsWith('.gguf')) {
    const name = decodeURIComponent(abs.pathname.split('/').pop()!);
    return { kind: 'gguf', name, file: (await get(abs, name, true))! };
  }
  const base = new URL(abs.href.endsWith('/') ? abs.href : `${abs.href}/`);
  const name = decodeURIComponent(base.pathname.replace(/\/$/, '').split('/').pop() || base.host);
  const manifestUrl = new URL('files.json', base).href;
  const manifest = await fetch(manifestUrl, requestInit(manifestUrl, opts)).then((r) => (r.ok ? (r.json() as Promise<{ name?: string; files?: string[] }>) : null)).catch(() => null);
  if (manifest?.files && manifest.files.length > 0) {
    const label = manifest.name ?? name;
    const gguf = manifest.files.find((f) => f.toLowerCase().endsWith('.gguf'));
    if (gguf) return { kind: 'gguf', name: gguf, file: (await get(new URL(encodeURIComponent(gguf), base), gguf, true))! };
    const files = new Map<string, Blob>();
    for (const f of manifest.files) files.set(f, (await get(new URL(f.split('/').map(encodeURIComponent).join('/'), base), f, true))!);
    return { kind: 'dir', name: label, files };
  }
  const files = new Map<string, Blob>();
  for (const f of REQUIRED) files.set(f, (await get(new URL(f, base), f, true))!);
  for (const f of OPTIONAL) {
    const b = await get(new URL(f, base), f, false);
    if (b) files.set(f, b);
  }
  const index = await get(new URL('model.safetensors.index.json', base), 'model.safetensors.index.json', false);
  if (index) {
    files.set('model.safetensors.index.json', index);
    const map = (JSON.parse(await index.text()) as { weight_map?: Record<string, string> }).weight_map ?? {};
    for (const shard of new Set(Object.values(map))) files.set(shard, (await get(new URL(shard, base), shard, true))!);
  } else {
    files.set('model.safetensors', (await get(new URL('model.safetensors', base), 'model.safetensors', true))!);
  }
  return { kind: 'dir', name, files };
}

/** Total size of a model's files in bytes. */
export function modelBytes(m: ModelFiles): number {
  return m.kind === 'gguf' ? m.file.size : [...m.files.values()].reduce((s, b) => s + b.size, 0);
}
