/**
 * Crafted bad model files, one per way a loader could be fooled (issue 15): absurd counts that
 * would size allocations, counts that disagree with the weights, out-of-vocabulary and
 * duplicate token ids, a pattern that backtracks exponentially, NaN / Inf weights, a
 * safetensors header length inside its padding, zero and non-integer fields, and a bad
 * generation_config.json. Each must give a typed HipAttnError naming the file and the field or
 * tensor, quickly and without a large allocation.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { HipAttnError } from '../errors.js';
import { freshSeed } from '../util/rng.js';
import { bufferSource, mapDirectory } from './byte-source.js';
import { parseLlamaConfig } from './config.js';
import { type FiniteCheck, bf16ToF32, f16BitsToNumber, f16ToF32, f32ToF16, firstNonFiniteF16, firstNonFiniteF32 } from './dtypes.js';
import { readGguf } from './gguf.js';
import { writeGguf } from './gguf-write.js';
import { openGgufFile, openHfModel } from './load.js';
import { catastrophicBacktrackingReason } from './regex-safety.js';
import { SafetensorsFile, writeSafetensors } from './safetensors.js';
import { Rng } from './sampling.js';
import { HfTokenizer } from './tokenizer.js';
import { loadLlamaWeightsF32 } from './weights.js';

const MINI = 'models/hip-testbed-mini';
const STORIES = 'models/stories260K/stories260K.gguf';
const seed = Number(process.env.HIPATTN_SEED ?? freshSeed());
console.log(`loader-bounds.test seed ${seed} (set HIPATTN_SEED to reproduce)`);
const rng = new Rng(seed);

const miniFiles = new Map<string, Uint8Array>(readdirSync(MINI).map((f) => [f, new Uint8Array(readFileSync(join(MINI, f)))]));
const miniJson = (f: string): Record<string, unknown> => JSON.parse(new TextDecoder().decode(miniFiles.get(f)!)) as Record<string, unknown>;
const stories = new Uint8Array(readFileSync(STORIES));

/** The mini model directory in memory with some files replaced. */
function miniWith(replace: Record<string, unknown>): ReturnType<typeof mapDirectory> {
  const files = new Map(miniFiles);
  for (const [f, v] of Object.entries(replace)) files.set(f, v instanceof Uint8Array ? v : new TextEncoder().encode(typeof v === 'string' ? v : JSON.stringify(v)));
  return mapDirectory('mini', files);
}

/** Runs `f`, expects a HipAttnError with `code` whose message matches every pattern; checks time and RSS growth. */
async function refused(f: () => Promise<unknown> | unknown, code: string, ...patterns: (string | RegExp)[]): Promise<HipAttnError> {
  const rss0 = process.memoryUsage().rss;
  const t0 = performance.now();
  let err: unknown;
  try {
    await f();
  } catch (e) {
    err = e;
  }
  const ms = performance.now() - t0;
  const grewMiB = (process.memoryUsage().rss - rss0) / 2 ** 20;
  expect(err).toBeInstanceOf(HipAttnError);
  const e = err as HipAttnError;
  expect(e.code, e.message).toBe(code);
  for (const p of patterns) {
    if (typeof p === 'string') expect(e.message).toContain(p);
    else expect(e.message).toMatch(p);
  }
  // Hang / huge-allocation detectors only: the refusals take milliseconds and allocate nothing big.
  expect(ms).toBeLessThan(5000);
  expect(grewMiB).toBeLessThan(256);
  return e;
}

/** Byte offset of `needle` in `hay`. */
function indexOf(hay: Uint8Array, needle: string): number {
  const n = new TextEncoder().encode(needle);
  outer: for (let i = 0; i + n.length <= hay.length; i++) {
    for (let j = 0; j < n.length; j++) if (hay[i + j] !== n[j]) continue outer;
    return i;
  }
  throw new Error(`${needle} not found`);
}

/** stories260K.gguf with the u32 metadata value of `key` replaced. */
function storiesWithU32(key: string, value: number): Uint8Array {
  const b = stories.slice();
  const at = indexOf(b, key) + key.length;
  const dv = new DataView(b.buffer);
  expect(dv.getUint32(at, true)).toBe(4); // value type UINT32
  dv.setUint32(at + 4, value, true);
  return b;
}

describe('absurd and inconsistent counts', () => {
  it('config.json num_hidden_layers 1e9: refused from the weights present, before any per-layer allocation', async () => {
    // Below the plausibility cap (2^26): bounded by the tensors the file holds.
    const many = 5 * 10 ** 7 + rng.int(1000);
    await refused(() => openHfModel(miniWith({ 'config.json': { ...miniJson('config.json'), num_hidden_layers: many } })), 'MODEL_FORMAT', `num_hidden_layers is ${many}`, 'hold 6 layers', 'model.layers.6.input_layernorm.weight');
    // Above it (1e9, 2^53): refused as implausible, naming the file and field.
    const huge = 10 ** 9 + rng.int(1000);
    await refused(() => openHfModel(miniWith({ 'config.json': { ...miniJson('config.json'), num_hidden_layers: huge } })), 'MODEL_FORMAT', `mini/config.json: "num_hidden_layers" is ${huge}, implausibly large`);
    await refused(() => openHfModel(miniWith({ 'config.json': { ...miniJson('config.json'), num_hidden_layers: 2 ** 53 } })), 'MODEL_FORMAT', 'mini/config.json', '"num_hidden_layers"');
  });

  it('GGUF llama.block_count 0xFFFFFFFF (and 5 + k): refused naming the key, before any per-layer allocation', async () => {
    await refused(() => openGgufFile(bufferSource('huge.gguf', storiesWithU32('llama.block_count', 0xffffffff))), 'MODEL_FORMAT', 'huge.gguf', 'llama.block_count');
    const more = 6 + rng.int(100);
    await refused(() => openGgufFile(bufferSource('more.gguf', storiesWithU32('llama.block_count', more))), 'MODEL_FORMAT', `"llama.block_count" is ${more}`, 'tensors of 5 blocks');
  });

  it('a corrupt array length in a multi-GB GGUF is refused without reading gigabytes of header', async () => {
    // A 20 GB "file": a small GGUF whose last metadata entry is a list of strings, then zeros
    // (which read as empty strings). A length of 2^31 fits the file size (8 bytes per string)
    // but not the 256 MiB header cap; the reader used to grow its header buffer towards 16 GB.
    const small = writeGguf({ 'general.architecture': { type: 'string', value: 'llama' }, 'x.names': { type: 'array', of: 'string', value: ['a'] } }, []);
    const at = indexOf(small, 'x.names') + 'x.names'.length + 4 + 4; // value type ARRAY, element type STRING
    new DataView(small.buffer).setBigUint64(at, 2n ** 31n + BigInt(rng.int(1000)), true);
    let bytesRead = 0;
    const huge = {
      name: 'huge.gguf',
      size: 20 * 2 ** 30,
      async read(offset: number, length: number): Promise<Uint8Array> {
        bytesRead += length;
        const out = new Uint8Array(length);
        if (offset < small.length) out.set(small.subarray(offset, Math.min(small.length, offset + length)));
        return out;
      },
      async close(): Promise<void> {},
    };
    await refused(() => openGgufFile(huge), 'MODEL_FORMAT', 'huge.gguf', '"x.names"', 'left for the header');
    expect(bytesRead).toBeLessThanOrEqual(2 ** 20);
  });

  it('fewer layers in the config than in the file are refused (config.json and GGUF)', async () => {
    const fewer = 1 + rng.int(5);
    await refused(() => openHfModel(miniWith({ 'config.json': { ...miniJson('config.json'), num_hidden_layers: fewer } })), 'MODEL_FORMAT', 'the weights hold 6 layers', `num_hidden_layers is ${fewer}`);
    await refused(() => openGgufFile(bufferSource('fewer.gguf', storiesWithU32('llama.block_count', 4))), 'MODEL_FORMAT', '"llama.block_count" is 4', 'tensors of 5 blocks');
  });
});

describe('oversized JSON files', () => {
  it('a multi-GB config.json is refused from its size, without being read', async () => {
    let bytesRead = 0;
    const dir = {
      name: 'big',
      async open(file: string) {
        if (file !== 'config.json') return undefined;
        return { name: 'big/config.json', size: 2 ** 32 + rng.int(1000), read: async (_o: number, n: number) => ((bytesRead += n), new Uint8Array(n)), close: async () => {} };
      },
    };
    await refused(() => openHfModel(dir), 'MODEL_FORMAT', 'big/config.json', 'too large for a JSON model file');
    expect(bytesRead).toBe(0);
  });
});

describe('zero and non-integer fields are named with their value', () => {
  const base = miniJson('config.json');
  it('config.json: 0, 2.5, 1e999 (Infinity), a string', () => {
    const parse = (patch: Record<string, unknown>, text?: string) => () => parseLlamaConfig(text !== undefined ? JSON.parse(text) : { ...base, ...patch }, 'x/config.json');
    expect(() => parse({ num_attention_heads: 0 })()).toThrow(/x\/config\.json: "num_attention_heads" must be a positive integer, got 0/);
    expect(() => parse({ hidden_size: 2.5 })()).toThrow(/"hidden_size" must be a positive integer, got 2\.5/);
    // 1e999 parses as Infinity; the message says so (it used to say "got null").
    const inf = JSON.stringify(base).replace('"head_dim":64', '"head_dim":1e999');
    expect(() => parse({}, inf)()).toThrow(/"head_dim" must be a positive integer, got Infinity/);
    expect(() => parse({ rms_norm_eps: Number.NaN })()).toThrow(/"rms_norm_eps" must be a positive number, got NaN/);
    expect(() => parse({ vocab_size: '8192' })()).toThrow(/"vocab_size" must be a positive integer, got "8192"/);
    expect(() => parse({ eos_token_id: 8192 })()).toThrow(/"eos_token_id" 8192 is outside the vocabulary of 8192/);
  });

  it('GGUF: head_count 0 is named (it used to surface as "8 of Infinity head dimensions")', async () => {
    const e = await refused(() => openGgufFile(bufferSource('zero.gguf', storiesWithU32('llama.attention.head_count', 0))), 'MODEL_FORMAT', 'zero.gguf', '"llama.attention.head_count" must be a positive integer, got 0');
    expect(e.message).not.toMatch(/Infinity|NaN/);
    await refused(() => openGgufFile(bufferSource('odd.gguf', storiesWithU32('llama.attention.head_count', 7))), 'MODEL_FORMAT', '"llama.embedding_length" 64 is not a multiple of "llama.attention.head_count" 7');
  });
});

describe('tokenizer.json', () => {
  const tok = miniJson('tokenizer.json');
  const build = (json: unknown) => () => new HfTokenizer({ tokenizerJson: json, name: 'x/tokenizer.json' });

  it('an added token id far beyond the vocabulary is refused at once (it used to spin for minutes)', async () => {
    const id = 10 ** 9 + rng.int(1000);
    const json = structuredClone(tok) as { added_tokens: unknown[] };
    json.added_tokens.push({ id, content: '<|far|>', special: true });
    await refused(build(json), 'TOKENIZER', 'x/tokenizer.json', '"<|far|>"', `id ${id}`);
    const neg = structuredClone(tok) as { added_tokens: { id: number }[] };
    neg.added_tokens[1]!.id = -1;
    await refused(build(neg), 'TOKENIZER', 'id -1');
  });

  it('duplicate ids are refused naming both tokens', async () => {
    const json = structuredClone(tok) as { model: { vocab: Record<string, number> }; added_tokens: { id: number; content: string }[] };
    const entries = Object.entries(json.model.vocab);
    const [a, idA] = entries[2 + rng.int(entries.length - 2)]!;
    let [b] = entries[2 + rng.int(entries.length - 2)]!;
    if (b === a) b = entries[0]![0];
    json.model.vocab[b] = idA;
    await refused(build(json), 'TOKENIZER', `both have id ${idA}`, JSON.stringify(a), JSON.stringify(b));
    // An added token taking the id of a different vocabulary token.
    const clash = structuredClone(tok) as typeof json;
    clash.added_tokens[1]!.id = 5;
    await refused(build(clash), 'TOKENIZER', '"<|end_of_text|>" has id 5, which the vocabulary gives to');
  });

  it('a pre-tokenizer pattern that backtracks exponentially is refused; the shipped tokenizer and real patterns are accepted', async () => {
    const json = structuredClone(tok);
    json.pre_tokenizer = { type: 'Sequence', pretokenizers: [{ type: 'Split', pattern: { Regex: '(a+)+$' }, behavior: 'Isolated', invert: false }, tok.pre_tokenizer] };
    await refused(build(json), 'TOKENIZER', 'pre_tokenizer.pretokenizers[0].pattern.Regex', '"(a+)+$"', 'exponential');
    expect(build(tok)().encode('The pass key is 1234', { addBos: false }).length).toBeGreaterThan(0);
    const real = [
      "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+", // GPT-2
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", // Llama 3
      "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", // o200k
      '\\s?[!-/:-~！-／：-～‘-‟　-。]+', // DeepSeek
      '(?:ab){2,}', '[(a+)+]', '\\(a+\\)+', '(a{1,3})?',
    ];
    for (const p of real) expect(catastrophicBacktrackingReason(p), p).toBeUndefined();
    for (const p of ['(a+)+', '(a*)*b', '(\\s*x)*', '(a|ab)+c', '(?:x+y?){2,}', '((a)+b){1,9}', '(\\p{L}+\\s?)+$']) expect(catastrophicBacktrackingReason(p), p).toBeDefined();
  });
});

describe('weights that load but give garbage', () => {
  it('the checks inside the conversions find the first non-finite value (vs the IEEE formula and a DataView)', () => {
    const bf16Ref = (b: number) => {
      const dv = new DataView(new ArrayBuffer(4));
      dv.setUint32(0, b << 16, true);
      return dv.getFloat32(0, true);
    };
    for (let round = 0; round < 20; round++) {
      // Random finite halves with a few arbitrary bit patterns (some NaN / Inf) at random places.
      const bits = new Uint16Array(1000 + rng.int(2000)).map(() => rng.int(0x7c00) | (rng.int(2) << 15));
      for (let k = rng.int(3); k > 0; k--) bits[rng.int(bits.length)] = rng.int(65536);
      const f16First = Array.from(bits).findIndex((b) => !Number.isFinite(f16BitsToNumber(b)));
      const bf16First = Array.from(bits).findIndex((b) => !Number.isFinite(bf16Ref(b)));
      const c: FiniteCheck = { firstNonFinite: -2 };
      const f = f16ToF32(bits, c);
      expect(c.firstNonFinite).toBe(f16First);
      expect(firstNonFiniteF16(bits)).toBe(f16First);
      expect(firstNonFiniteF32(f)).toBe(f16First);
      bf16ToF32(bits, c);
      expect(c.firstNonFinite).toBe(bf16First);
    }
    // float32 → float16: 65519 still rounds to 65504, 65520 to Infinity.
    const c: FiniteCheck = { firstNonFinite: -2 };
    f32ToF16(new Float32Array([1, -65519, 3]), c);
    expect(c.firstNonFinite).toBe(-1);
    f32ToF16(new Float32Array([1, -65519, 65520]), c);
    expect(c.firstNonFinite).toBe(2);
  });

  it('a NaN or Inf weight (safetensors bf16) is refused naming the tensor, as float32 and as float16', async () => {
    const st = miniFiles.get('model.safetensors')!;
    const header = JSON.parse(new TextDecoder().decode(st.subarray(8, 8 + Number(new DataView(st.buffer, st.byteOffset).getBigUint64(0, true))))) as Record<string, { data_offsets: [number, number] }>;
    const dataStart = 8 + Number(new DataView(st.buffer, st.byteOffset).getBigUint64(0, true));
    const layer = rng.int(6);
    const name = `model.layers.${layer}.post_attention_layernorm.weight`;
    const [begin, end] = header[name]!.data_offsets;
    const at = dataStart + begin + 2 * rng.int((end - begin) / 2);
    const bad = st.slice();
    bad[at] = 0xc0;
    bad[at + 1] = rng.int(2) ? 0x7f : 0xff; // bf16 NaN (0x7fc0) or negative NaN (0xffc0)
    const m = await openHfModel(miniWith({ 'model.safetensors': bad }));
    const e = await refused(() => loadLlamaWeightsF32(m.config, m.store), 'NON_FINITE', `tensor "${name}"`, 'non-finite');
    expect(e.message).toContain('mini/model.safetensors');
    await refused(() => m.store.readF16Bits(name), 'NON_FINITE', `tensor "${name}"`);
    await m.store.close();
    // An F32 weight beyond the float16 range is refused when read as float16 bits only.
    const f = writeSafetensors([{ name: 'w', dtype: 'F32', shape: [2], data: new Uint8Array(new Float32Array([1, 70000]).buffer) }]);
    const s = await SafetensorsFile.open(bufferSource('big.safetensors', f));
    expect(Array.from(await s.readF32('w'))).toEqual([1, 70000]);
    await refused(() => s.readF16Bits('w'), 'NON_FINITE', 'big.safetensors', '70000 (beyond the float16 range)');
  });

  it('a NaN weight in a GGUF F32 tensor is refused naming the tensor', async () => {
    const g = await readGguf(bufferSource('s.gguf', stories));
    const t = g.tensors.get('output_norm.weight')!;
    const bad = stories.slice();
    new DataView(bad.buffer).setFloat32(t.byteOffset + 4 * rng.int(t.byteLength / 4), rng.int(2) ? Number.NaN : -Infinity, true);
    const m = await openGgufFile(bufferSource('nan.gguf', bad));
    await refused(() => loadLlamaWeightsF32(m.config, m.store), 'NON_FINITE', 'nan.gguf', 'tensor "output_norm.weight"');
    await refused(() => m.store.readF16Bits('model.norm.weight'), 'NON_FINITE', 'output_norm.weight');
  });

  it('a safetensors header length that lands inside its padding is refused (it shifted every tensor)', async () => {
    // A header whose JSON needs padding: the length field counts the padding spaces.
    const data = new Uint8Array(new Float32Array([1, 2, 3]).buffer);
    const file = writeSafetensors([{ name: 'abc', dtype: 'F32', shape: [3], data }]);
    const len = Number(new DataView(file.buffer).getBigUint64(0, true));
    const json = new TextDecoder().decode(file.subarray(8, 8 + len)).trimEnd().length;
    expect(len - json).toBeGreaterThan(0);
    expect(Array.from(await (await SafetensorsFile.open(bufferSource('ok.safetensors', file))).readF32('abc'))).toEqual([1, 2, 3]);
    const short = json + rng.int(len - json); // still past the JSON, inside the padding
    const bad = file.slice();
    new DataView(bad.buffer).setBigUint64(0, BigInt(short), true);
    await refused(() => SafetensorsFile.open(bufferSource('pad.safetensors', bad)), 'MODEL_FORMAT', 'pad.safetensors', `${len - short} bytes after the last tensor`, 'padding');
    // The real file with its length cut into the padding, if it has any; a gap between tensors.
    const gap = writeSafetensors([{ name: 'a', dtype: 'F32', shape: [1], data: new Uint8Array(4) }, { name: 'b', dtype: 'F32', shape: [1], data: new Uint8Array(8) }]);
    await refused(() => SafetensorsFile.open(bufferSource('gap.safetensors', gap)), 'MODEL_FORMAT', 'gap.safetensors');
  });
});

describe('generation_config.json', () => {
  it('a bad value is a MODEL_FORMAT error naming the file and field (not a bad option at generation time)', async () => {
    const gen = miniJson('generation_config.json');
    await refused(() => openHfModel(miniWith({ 'generation_config.json': { ...gen, temperature: -0.5 - rng.nextFloat() } })), 'MODEL_FORMAT', 'mini/generation_config.json', '"temperature" must be a finite number ≥ 0');
    await refused(() => openHfModel(miniWith({ 'generation_config.json': { ...gen, top_p: 'high' } })), 'MODEL_FORMAT', 'mini/generation_config.json: "top_p" must be a number in (0, 1], got "high"');
    await refused(() => openHfModel(miniWith({ 'generation_config.json': { ...gen, eos_token_id: [1, 99999] } })), 'MODEL_FORMAT', 'mini/generation_config.json: "eos_token_id" 99999 is outside the vocabulary of 8192');
    await refused(() => openHfModel(miniWith({ 'generation_config.json': '[1, 2]' })), 'MODEL_FORMAT', 'mini/generation_config.json: not a JSON object');
    await refused(() => openHfModel(miniWith({ 'generation_config.json': '{"temperature": 0.7,' })), 'MODEL_FORMAT', 'mini/generation_config.json: not valid JSON');
    // null means "not set", as in transformers; valid values come through.
    const ok = await openHfModel(miniWith({ 'generation_config.json': { ...gen, temperature: 0.7, top_k: null, do_sample: true } }));
    expect(ok.generation).toEqual({ eosTokenIds: [1], temperature: 0.7, doSample: true });
    await ok.store.close();
  });
});
