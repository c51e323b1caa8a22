/**
 * Loader fuzzing: mutated copies of the shipped model files (models/hip-testbed-mini/*,
 * models/stories260K/stories260K.gguf) fed to each loader. A case passes when the loader either
 * succeeds or throws a HipAttnError; any other exception is a failure, reported with the seed
 * and case index that reproduce it. Per case the time is recorded; over the run, the resident
 * set size (so that an allocation sized by a corrupt count shows up even when it is freed).
 *
 * Loaders and what a case runs:
 *  - safetensors: SafetensorsFile.open on the mutated file, the shape check against the mini
 *    config, then every small tensor (≤ 4 KiB: the norms) read as float32 and float16.
 *  - config: config.json → parseLlamaConfig → shape check against the real weights → RoPE
 *    frequencies; generation_config.json → parseGenerationConfig.
 *  - tokenizer: tokenizer.json (+ tokenizer_config.json) → HfTokenizer → encode and decode a few
 *    texts (one of them the classic backtracking bait "aaa…!"). Mostly on a 1,024-token cut of
 *    the shipped tokenizer (building the full 8,192-token one takes ~25 ms); every 16th case
 *    mutates the full file.
 *  - gguf: openGgufFile (header, config, embedded tokenizer, shape check), encode / decode, and
 *    the small tensors read as float32 and float16.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { HipAttnError } from '../../src/errors.js';
import { type ByteSource, bufferSource, checkRange, readJson } from '../../src/model/byte-source.js';
import { type LlamaConfig, parseLlamaConfig } from '../../src/model/config.js';
import { openGgufFile, parseGenerationConfig } from '../../src/model/load.js';
import { ropeInvFreq } from '../../src/model/rope.js';
import { SafetensorsFile } from '../../src/model/safetensors.js';
import type { TensorStore } from '../../src/model/tensor-store.js';
import { HfTokenizer } from '../../src/model/tokenizer.js';
import { checkTensorShapes } from '../../src/model/weights.js';
import { Rng } from '../../src/util/rng.js';
import { ggufFields } from './gguf-fields.js';
import { EXTREME_NUMBERS, extremeField, jsonSlots, jsonValue, mutateBytes, mutateJson, pick, stringify, truncatedLength } from './mutate.js';

export const LOADERS = ['safetensors', 'config', 'tokenizer', 'gguf'] as const;
export type LoaderName = (typeof LOADERS)[number];

export interface FuzzOptions {
  /** Cases per loader. */
  cases: number;
  seed: number;
  /** The package root (models/ is read from it). */
  root: string;
}

export interface FuzzFailure {
  index: number;
  what: string;
  error: string;
}

export interface FuzzReport {
  loader: LoaderName;
  seed: number;
  cases: number;
  /** Cases the loader accepted. */
  loaded: number;
  /** Refusals by HipAttnError code. */
  refused: Record<string, number>;
  /** Exceptions that were not HipAttnErrors. */
  failures: FuzzFailure[];
  maxCaseMs: number;
  slowest: string;
  seconds: number;
  /** Peak resident set size during the run minus the size before it, MiB. */
  rssGrowthMiB: number;
}

/** One case: what was mutated, and the loader run on the result. */
interface Case {
  what: string;
  run(): Promise<void>;
}

/** A source over consecutive parts (a mutated head and the untouched rest), cut to `size`. */
function partsSource(name: string, parts: Uint8Array[], size?: number): ByteSource {
  const total = parts.reduce((n, p) => n + p.length, 0);
  const where = { name, size: Math.min(total, size ?? total) };
  return {
    ...where,
    async read(offset: number, length: number): Promise<Uint8Array> {
      checkRange(where, offset, length, 'a read');
      const out = new Uint8Array(length);
      let partStart = 0;
      for (const p of parts) {
        const from = Math.max(offset, partStart);
        const to = Math.min(offset + length, partStart + p.length);
        if (from < to) out.set(p.subarray(from - partStart, to - partStart), from - offset);
        partStart += p.length;
      }
      return out;
    },
    async close(): Promise<void> {},
  };
}

/** Reads every tensor of at most 4 KiB as float32 and float16 (the NaN / Inf checks). */
async function readSmallTensors(store: TensorStore): Promise<void> {
  for (const name of store.names()) {
    const info = store.info(name)!;
    if (info.byteLength > 4096) continue;
    if (info.dtype !== 'F32' && info.dtype !== 'F16' && info.dtype !== 'BF16' && info.dtype !== 'Q8_0') continue;
    await store.readF32(name);
    await store.readF16Bits(name);
  }
}

const SAMPLE_TEXTS = ['The pass key is 71432. Remember it!', `${'a'.repeat(40)}!`, ' \n\t  spaces  and\r\nlines 日本語 🎉', '<|begin_of_text|>hello<|end_of_text|>'];

/** Encodes and decodes the sample texts. */
function exercise(tok: { encode(t: string): number[]; decode(ids: readonly number[]): string }): void {
  for (const t of SAMPLE_TEXTS) {
    const ids = tok.encode(t);
    if (ids.length > 0) tok.decode(ids);
  }
}

// ---------------------------------------------------------------------------------------------

function safetensorsCases(root: string): (rng: Rng) => Case {
  const file = readFileSync(join(root, 'models/hip-testbed-mini/model.safetensors'));
  const config = parseLlamaConfig(JSON.parse(readFileSync(join(root, 'models/hip-testbed-mini/config.json'), 'utf8')));
  const headerLen = Number(file.readBigUInt64LE(0));
  const dataStart = 8 + headerLen;
  const head = new Uint8Array(file.subarray(0, dataStart));
  const data = new Uint8Array(file.subarray(dataStart));
  const header = JSON.parse(new TextDecoder().decode(head.subarray(8))) as Record<string, { data_offsets: [number, number] }>;
  // Data ranges of the small tensors (norms), whose bytes the NaN / Inf mutations target.
  const small = Object.entries(header)
    .filter(([k, v]) => k !== '__metadata__' && v.data_offsets[1] - v.data_offsets[0] <= 4096)
    .map(([, v]) => v.data_offsets);
  const name = 'fuzz/model.safetensors';
  const open = async (src: ByteSource): Promise<void> => {
    const st = await SafetensorsFile.open(src);
    checkTensorShapes(config, st);
    await readSmallTensors(st);
  };
  return (rng) => {
    const kind = rng.int(6);
    if (kind === 0) {
      const m = mutateBytes(rng, head);
      return { what: `header bytes ${m.what}`, run: () => open(partsSource(name, [m.bytes, data])) };
    }
    if (kind === 1) {
      const h = head.slice();
      const v = rng.int(2) ? BigInt(Math.max(0, headerLen - 1 - rng.int(Math.min(headerLen, 64)))) : extremeField(rng, BigInt(headerLen), 64);
      new DataView(h.buffer).setBigUint64(0, v, true);
      return { what: `header length ${v}`, run: () => open(partsSource(name, [h, data])) };
    }
    if (kind === 2 || kind === 3) {
      const json = structuredClone(header) as Record<string, unknown>;
      const what = mutateJson(rng, jsonSlots(json, 3));
      const text = new TextEncoder().encode(stringify(json));
      const padded = new Uint8Array(Math.ceil(text.length / 8) * 8).fill(0x20);
      padded.set(text);
      const h = new Uint8Array(8 + padded.length);
      new DataView(h.buffer).setBigUint64(0, BigInt(padded.length), true);
      h.set(padded, 8);
      return { what: `header JSON ${what}`, run: () => open(partsSource(name, [h, data])) };
    }
    if (kind === 4) {
      const size = truncatedLength(rng, file.length, rng.int(2) ? dataStart : 8);
      return { what: `truncated to ${size}`, run: () => open(partsSource(name, [head, data], size)) };
    }
    // Data bytes of a small tensor: exponent bits set give ±Inf / NaN in bf16.
    const [b, e] = pick(rng, small);
    const d = data.slice(b, e);
    const at = 2 * rng.int(d.length / 2);
    if (rng.int(2)) d[at + 1] = rng.int(2) ? 0x7f : 0xff;
    if (rng.int(2)) d[at]! |= 0x80;
    const m = mutateBytes(rng, d);
    return { what: `tensor data @${b + at}, ${m.what}`, run: () => open(partsSource(name, [head, data.subarray(0, b), m.bytes, data.subarray(e)])) };
  };
}

function configCases(root: string): { make: (rng: Rng) => Case; close: () => Promise<void> } {
  const dir = join(root, 'models/hip-testbed-mini');
  const configText = readFileSync(join(dir, 'config.json'), 'utf8');
  const genText = readFileSync(join(dir, 'generation_config.json'), 'utf8');
  const stFile = readFileSync(join(dir, 'model.safetensors'));
  let store: SafetensorsFile | undefined;
  const enc = new TextEncoder();
  const run = async (cfgBytes: Uint8Array, genBytes: Uint8Array): Promise<void> => {
    store ??= await SafetensorsFile.open(bufferSource('fuzz/model.safetensors', stFile));
    const config: LlamaConfig = parseLlamaConfig(await readJson(bufferSource('fuzz/config.json', cfgBytes)), 'fuzz/config.json');
    checkTensorShapes(config, store);
    ropeInvFreq(config.rope, config.headDim);
    parseGenerationConfig(await readJson(bufferSource('fuzz/generation_config.json', genBytes)), config.eosTokenIds, 'fuzz/generation_config.json', config.vocabSize);
  };
  const make = (rng: Rng): Case => {
    const kind = rng.int(5);
    const cfgOk = enc.encode(configText);
    const genOk = enc.encode(genText);
    if (kind <= 1) {
      const json = JSON.parse(configText) as Record<string, unknown>;
      if (rng.int(4) === 0) json.rope_scaling = { rope_type: pick(rng, ['llama3', 'linear', 'dynamic']), factor: pick(rng, EXTREME_NUMBERS), low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 };
      const what = mutateJson(rng, jsonSlots(json, 2));
      return { what: `config.json ${what}`, run: () => run(enc.encode(stringify(json)), genOk) };
    }
    if (kind === 2) {
      const json = JSON.parse(genText) as Record<string, unknown>;
      for (const k of ['temperature', 'top_p', 'top_k', 'max_new_tokens', 'do_sample']) if (rng.int(3) === 0) json[k] = jsonValue(rng, 1);
      const what = mutateJson(rng, jsonSlots(json, 1));
      return { what: `generation_config.json ${what}`, run: () => run(cfgOk, enc.encode(stringify(json))) };
    }
    if (kind === 3) {
      const m = mutateBytes(rng, cfgOk);
      return { what: `config.json bytes ${m.what}`, run: () => run(m.bytes, genOk) };
    }
    const cut = rng.int(cfgOk.length);
    return { what: `config.json cut at ${cut}`, run: () => run(cfgOk.subarray(0, cut), genOk) };
  };
  return { make, close: async () => store?.close() };
}

/** The shipped tokenizer cut to its first `n` ids (and the merges among them), for cheaper cases. */
function cutTokenizer(full: Record<string, unknown>, n: number): Record<string, unknown> {
  const t = structuredClone(full) as { model: { vocab: Record<string, number>; merges: (string | string[])[] }; added_tokens: { id: number }[] };
  t.model.vocab = Object.fromEntries(Object.entries(t.model.vocab).filter(([, id]) => id < n));
  t.model.merges = t.model.merges.filter((m) => {
    const [a, b] = typeof m === 'string' ? m.split(' ') : m;
    return a! in t.model.vocab && b! in t.model.vocab && `${a}${b}` in t.model.vocab;
  });
  t.added_tokens = t.added_tokens.filter((a) => a.id < n);
  return t as unknown as Record<string, unknown>;
}

const PATTERNS = ['(a+)+$', '(\\s*\\S)*$', '(a|a)*b', '(?:x+x+)+y', "'s|'t| ?\\p{L}+| ?\\p{N}+|\\s+(?!\\S)|\\s+", '\\p{N}{1,3}', '[', '(?<=a)b', '(?i:ab)+', '\\s*\\s*\\s*$'];

function tokenizerCases(root: string): (rng: Rng) => Case {
  const dir = join(root, 'models/hip-testbed-mini');
  const fullText = readFileSync(join(dir, 'tokenizer.json'), 'utf8');
  const full = JSON.parse(fullText) as Record<string, unknown>;
  const cut = cutTokenizer(full, 1024);
  const cutText = JSON.stringify(cut);
  const cfgText = readFileSync(join(dir, 'tokenizer_config.json'), 'utf8');
  const enc = new TextEncoder();
  const run = async (tokBytes: Uint8Array, cfgBytes: Uint8Array): Promise<void> => {
    const json = await readJson(bufferSource('fuzz/tokenizer.json', tokBytes));
    const cfg = await readJson(bufferSource('fuzz/tokenizer_config.json', cfgBytes));
    const tok = new HfTokenizer({
      tokenizerJson: json,
      tokenizerConfig: (typeof cfg === 'object' && cfg !== null ? cfg : {}) as Record<string, unknown>,
      bosTokenId: 0,
      eosTokenIds: [1],
      name: 'fuzz/tokenizer.json',
    });
    exercise(tok);
    tok.idToToken(tok.vocabSize - 1);
  };
  return (rng) => {
    const useFull = rng.int(16) === 0;
    const text = useFull ? fullText : cutText;
    const cfgOk = enc.encode(cfgText);
    const kind = rng.int(6);
    if (kind <= 2) {
      const json = structuredClone(useFull ? full : cut) as { model: Record<string, unknown>; added_tokens: unknown[] } & Record<string, unknown>;
      // Slots: the configuration (not the big tables), a few vocabulary entries and merges.
      const slots = jsonSlots(json, 4, new Set(['vocab', 'merges']));
      const vocab = json.model.vocab as Record<string, unknown>;
      const keys = Object.keys(vocab);
      for (let i = 0; i < 4; i++) slots.push([vocab, pick(rng, keys)]);
      const merges = json.model.merges as unknown[];
      for (let i = 0; i < 2; i++) slots.push([merges, rng.int(merges.length)]);
      let what = mutateJson(rng, slots);
      if (rng.int(4) === 0) {
        const p = pick(rng, PATTERNS);
        json.pre_tokenizer = { type: 'Sequence', pretokenizers: [{ type: 'Split', pattern: { Regex: p }, behavior: 'Isolated', invert: false }, { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false }] };
        what += `, pattern ${p}`;
      }
      if (rng.int(4) === 0 && Array.isArray(json.added_tokens)) {
        const id = pick(rng, [...EXTREME_NUMBERS, 5, 1023, 1024, 8191, 8192]);
        json.added_tokens.push({ id, content: `<extra_${rng.int(100)}>`, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
        what += `, added token id ${id}`;
      }
      return { what: `${useFull ? 'full' : 'cut'} tokenizer.json ${what}`, run: () => run(enc.encode(stringify(json)), cfgOk) };
    }
    if (kind === 3) {
      const m = mutateBytes(rng, enc.encode(text));
      return { what: `${useFull ? 'full' : 'cut'} tokenizer.json bytes ${m.what}`, run: () => run(m.bytes, cfgOk) };
    }
    if (kind === 4) {
      const json = JSON.parse(cfgText) as Record<string, unknown>;
      const what = mutateJson(rng, jsonSlots(json, 1));
      return { what: `tokenizer_config.json ${what}`, run: () => run(enc.encode(text), enc.encode(stringify(json))) };
    }
    const bytes = enc.encode(text);
    const at = truncatedLength(rng, bytes.length, bytes.length);
    return { what: `tokenizer.json cut at ${at}`, run: () => run(bytes.subarray(0, at), cfgOk) };
  };
}

function ggufCases(root: string): (rng: Rng) => Case {
  const file = new Uint8Array(readFileSync(join(root, 'models/stories260K/stories260K.gguf')));
  const { fields, headerEnd } = ggufFields(file);
  const byKind = new Map<string, typeof fields>();
  for (const f of fields) byKind.set(f.kind, [...(byKind.get(f.kind) ?? []), f]);
  const kinds = [...byKind.keys()];
  const name = 'fuzz/stories260K.gguf';
  const open = async (bytes: Uint8Array, size?: number): Promise<void> => {
    const m = await openGgufFile(size === undefined ? bufferSource(name, bytes) : bufferSource(name, bytes.subarray(0, size)));
    try {
      exercise(m.tokenizer);
      await readSmallTensors(m.store);
    } finally {
      await m.store.close();
    }
  };
  return (rng) => {
    const kind = rng.int(5);
    if (kind <= 1) {
      const f = pick(rng, byKind.get(pick(rng, kinds))!);
      const bytes = file.slice();
      const dv = new DataView(bytes.buffer);
      let value: string;
      if (f.kind === 'scalar' && (f.type === 6 || f.type === 12)) {
        const v = pick(rng, [NaN, Infinity, -Infinity, 0, -1, 1e30, 1e-30]);
        if (f.bits === 32) dv.setFloat32(f.at, v, true);
        else dv.setFloat64(f.at, v, true);
        value = String(v);
      } else {
        const orig = f.bits === 32 ? BigInt(dv.getUint32(f.at, true)) : dv.getBigUint64(f.at, true);
        const v = extremeField(rng, orig, f.bits);
        if (f.bits === 32) dv.setUint32(f.at, Number(v), true);
        else dv.setBigUint64(f.at, v, true);
        value = String(v);
      }
      return { what: `${f.label} (${f.kind}) = ${value}`, run: () => open(bytes) };
    }
    if (kind === 2) {
      const m = mutateBytes(rng, file, 0, headerEnd);
      return { what: `header bytes ${m.what}`, run: () => open(m.bytes) };
    }
    if (kind === 3) {
      const m = mutateBytes(rng, file, headerEnd, file.length);
      return { what: `data bytes ${m.what}`, run: () => open(m.bytes) };
    }
    const size = truncatedLength(rng, file.length, headerEnd);
    return { what: `truncated to ${size}`, run: () => open(file, size) };
  };
}

/** Seed of case `index` of `loader`: every case can be replayed on its own. */
export function caseSeed(seed: number, loader: LoaderName, index: number): number {
  return (seed >>> 0) * 2 ** 20 + LOADERS.indexOf(loader) * 2 ** 18 + (index % 2 ** 18);
}

/** Runs `options.cases` mutated cases through one loader. */
export async function fuzzLoader(loader: LoaderName, options: FuzzOptions): Promise<FuzzReport> {
  let make: (rng: Rng) => Case;
  let close = async (): Promise<void> => {};
  if (loader === 'safetensors') make = safetensorsCases(options.root);
  else if (loader === 'config') ({ make, close } = configCases(options.root));
  else if (loader === 'tokenizer') make = tokenizerCases(options.root);
  else make = ggufCases(options.root);
  const report: FuzzReport = { loader, seed: options.seed, cases: 0, loaded: 0, refused: {}, failures: [], maxCaseMs: 0, slowest: '', seconds: 0, rssGrowthMiB: 0 };
  const rss0 = process.memoryUsage().rss;
  let rssPeak = rss0;
  const t0 = performance.now();
  for (let i = 0; i < options.cases; i++) {
    const c = make(new Rng(caseSeed(options.seed, loader, i)));
    const start = performance.now();
    try {
      await c.run();
      report.loaded++;
    } catch (e) {
      if (e instanceof HipAttnError) report.refused[e.code] = (report.refused[e.code] ?? 0) + 1;
      else report.failures.push({ index: i, what: c.what, error: e instanceof Error ? `${e.name}: ${e.message}`.slice(0, 300) : String(e) });
    }
    const ms = performance.now() - start;
    if (ms > report.maxCaseMs) {
      report.maxCaseMs = ms;
      report.slowest = `case ${i}: ${c.what}`;
    }
    report.cases++;
    if (i % 25 === 0) rssPeak = Math.max(rssPeak, process.memoryUsage().rss);
  }
  rssPeak = Math.max(rssPeak, process.memoryUsage().rss);
  await close();
  report.seconds = (performance.now() - t0) / 1000;
  report.rssGrowthMiB = (rssPeak - rss0) / 2 ** 20;
  return report;
}

/** One line per report: cases, loaded, refusals by code, failures, slowest case, time, memory. */
export function formatReport(r: FuzzReport): string {
  const refused = Object.entries(r.refused).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ');
  return `${r.loader}: ${r.cases} cases (seed ${r.seed}): ${r.loaded} loaded, refused ${refused || 'none'}; ${r.failures.length} failures; slowest ${r.maxCaseMs.toFixed(0)} ms; ${r.seconds.toFixed(1)} s; RSS +${r.rssGrowthMiB.toFixed(0)} MiB`;
}
