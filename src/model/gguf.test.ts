/**
 * GGUF: the real stories260K file (metadata cross-checked with @huggingface/gguf, the README's
 * story reproduced), hip-testbed-mini converted to GGUF the way llama.cpp's converter does it
 * (Q/K rows permuted; F32, F16 and Q8_0; byte-level BPE tokenizer) matching the safetensors
 * path, and malformed files that must fail with clear errors.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gguf as hfGguf } from '@huggingface/gguf';
import { afterAll, describe, expect, it } from 'vitest';
import { HipAttnError } from '../errors.js';
import { bufferSource } from './byte-source.js';
import { encodeChat } from './chat-template.js';
import { f16BitsToNumber, f32ToF16Bits } from './dtypes.js';
import { generate } from './generate.js';
import { dequantizeQ8_0, readGguf, unpermuteRows } from './gguf.js';
import { type GgufWriteTensor, type GgufWriteValue, permuteRowsForGguf, quantizeQ8_0, writeGguf } from './gguf-write.js';
import { LlamaCpu } from './llama-cpu.js';
import { type OpenedModel, openGgufFile } from './load.js';
import { fileSource } from './node-files.js';
import { openModelPath } from './node-load.js';
import { Rng } from './sampling.js';
import { layerTensorNames, loadLlamaWeightsF32 } from './weights.js';

const STORIES = 'models/stories260K/stories260K.gguf';
const MINI = 'models/hip-testbed-mini';
const seed = Number(process.env.HIPATTN_SEED ?? Math.floor(Math.random() * 2 ** 31));
console.log(`gguf.test seed ${seed} (set HIPATTN_SEED to reproduce)`);
const rng = new Rng(seed);
const dir = mkdtempSync(join(tmpdir(), 'hipattn-gguf-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('stories260K.gguf', () => {
  it('metadata and tensor directory equal what @huggingface/gguf reads', async () => {
    const ours = await readGguf(await fileSource(STORIES));
    const theirs = await hfGguf(STORIES, { allowLocalFile: true });
    expect(ours.version).toBe(3);
    for (const [key, value] of Object.entries(theirs.metadata)) {
      if (key === 'version' || key === 'tensor_count' || key === 'kv_count') continue;
      expect(ours.metadata.get(key), key).toEqual(value);
    }
    expect(ours.metadata.size).toBe(Number(theirs.metadata.kv_count));
    expect(ours.dataOffset).toBe(Number(theirs.tensorDataOffset));
    for (const t of theirs.tensorInfos) {
      const o = ours.tensors.get(t.name)!;
      expect(o.ne).toEqual(t.shape.map(Number));
      expect(o.byteOffset).toBe(Number(theirs.tensorDataOffset + t.offset));
      expect(o.type).toBe('F32');
    }
    await ours.source.close();
  });

  it('greedy decoding from BOS reproduces the story of its README', async () => {
    const m = await openModelPath(STORIES);
    const weights = await loadLlamaWeightsF32(m.config, m.store);
    const lm = new LlamaCpu(m.config, weights, { capacity: 512 });
    const t0 = performance.now();
    const out = await generate(lm, m.tokenizer, [m.tokenizer.bosTokenId!], { maxNewTokens: 100, temperature: 0 });
    console.log(`stories260K: 100 tokens in ${(performance.now() - t0).toFixed(0)} ms: ${JSON.stringify(out.text)}`);
    const expected =
      'Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.\n' +
      'Lily\'s mom said, "Lily, let\'s go to the park."';
    expect(out.text.startsWith(expected)).toBe(true);
    // The tokenizer encodes the story back to exactly the generated ids.
    const ids = m.tokenizer.encode(expected);
    expect(ids).toEqual([m.tokenizer.bosTokenId, ...out.ids.slice(0, ids.length - 1)]);
    await m.store.close();
  });

  it('SentencePiece tokenizer: round trips, byte fallback, special tokens, leading-space rule', async () => {
    const m = await openModelPath(STORIES);
    const tok = m.tokenizer;
    for (const text of ['Hello world', '  two leading spaces', 'Tim said: "¡Olé!" 日本 🎉', 'tab\there\nnewline', 'x']) {
      const ids = tok.encode(text);
      expect(ids[0]).toBe(tok.bosTokenId);
      expect(tok.decode(ids, { skipSpecialTokens: true })).toBe(text);
    }
    // Characters outside the 512-token vocabulary fall back to UTF-8 bytes <0xXX>.
    const emoji = tok.encode('🎉', { addBos: false });
    expect(emoji.map((id) => tok.idToToken(id))).toEqual(['▁', '<0xF0>', '<0x9F>', '<0x8E>', '<0x89>']);
    // Control tokens written in the text are parsed as special ids; a space prefix follows them (llama.cpp).
    const withEos = tok.encode('The end.</s>Once', { addBos: false });
    expect(withEos).toContain(2);
    expect(tok.decode(withEos, { skipSpecialTokens: true })).toBe('The end. Once');
    expect(tok.decode(withEos)).toBe('The end.</s> Once');
    // Merges follow scores: "▁the" is one token.
    expect(tok.encode(' the', { addBos: false }).map((id) => tok.idToToken(id))).toEqual(['▁', '▁the']);
    await m.store.close();
  });
});

describe('Q/K permutation', () => {
  it("llama.cpp's interleaved RoPE on permuted rows equals rotate_half RoPE on Hugging Face rows", () => {
    const heads = 3;
    const d = 8;
    const inDim = 5;
    const w = new Float32Array(heads * d * inDim).map(() => rng.nextFloat() - 0.5);
    const x = new Float32Array(inDim).map(() => rng.nextFloat() - 0.5);
    const perm = permuteRowsForGguf(w, heads, d, inDim);
    expect(unpermuteRows(perm, heads, d, inDim)).toEqual(w);
    const project = (m: Float32Array) => Array.from({ length: heads * d }, (_, r) => x.reduce((s, xv, k) => s + xv * m[r * inDim + k]!, 0));
    const qHf = project(w);
    const qCpp = project(perm);
    const pos = 7;
    const inv = Array.from({ length: d / 2 }, (_, i) => 1 / 10000 ** ((2 * i) / d));
    const hf = qHf.slice();
    const cpp = qCpp.slice();
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < d / 2; i++) {
        const c = Math.cos(pos * inv[i]!);
        const s = Math.sin(pos * inv[i]!);
        const b = h * d;
        [hf[b + i], hf[b + i + d / 2]] = [qHf[b + i]! * c - qHf[b + i + d / 2]! * s, qHf[b + i + d / 2]! * c + qHf[b + i]! * s];
        [cpp[b + 2 * i], cpp[b + 2 * i + 1]] = [qCpp[b + 2 * i]! * c - qCpp[b + 2 * i + 1]! * s, qCpp[b + 2 * i + 1]! * c + qCpp[b + 2 * i]! * s];
      }
    }
    const back = unpermuteRows(new Float32Array(cpp), heads, d, 1);
    back.forEach((v, i) => expect(v).toBeCloseTo(hf[i]!, 5));
  });
});

describe('Q8_0', () => {
  it('dequantization equals scale × int8 computed by hand', () => {
    const blocks = 8;
    const bytes = new Uint8Array(blocks * 34);
    const dv = new DataView(bytes.buffer);
    const expected: number[] = [];
    for (let b = 0; b < blocks; b++) {
      const scaleBits = f32ToF16Bits((rng.nextFloat() + 0.01) * 0.05);
      dv.setUint16(b * 34, scaleBits, true);
      for (let i = 0; i < 32; i++) {
        const q = (rng.nextU32() % 255) - 127;
        dv.setInt8(b * 34 + 2 + i, q);
        expected.push(Math.fround(f16BitsToNumber(scaleBits) * q));
      }
    }
    expect(Array.from(dequantizeQ8_0(bytes, blocks * 32))).toEqual(expected);
  });
  it('quantize → dequantize error ≤ half a step per block', () => {
    const x = new Float32Array(32 * 16).map(() => (rng.nextFloat() - 0.5) * 4);
    const y = dequantizeQ8_0(quantizeQ8_0(x), x.length);
    for (let b = 0; b < 16; b++) {
      const amax = Math.max(...Array.from(x.subarray(b * 32, b * 32 + 32), Math.abs));
      for (let i = b * 32; i < b * 32 + 32; i++) expect(Math.abs(x[i]! - y[i]!)).toBeLessThanOrEqual((amax / 127) * 0.51 + 1e-3 * amax);
    }
  });
});

/** Converts an opened Hugging Face llama model to GGUF as llama.cpp's converter would. */
async function hfToGguf(m: OpenedModel, type: 'F32' | 'F16' | 'Q8_0', tokenizerJson: Record<string, unknown>): Promise<Uint8Array> {
  const c = m.config;
  const tensors: GgufWriteTensor[] = [];
  const add = async (hfName: string, ggufName: string, permuteHeads?: number) => {
    const info = m.store.info(hfName)!;
    let data = await m.store.readF32(hfName);
    if (permuteHeads !== undefined) data = permuteRowsForGguf(data, permuteHeads, c.headDim, info.shape[1]!);
    tensors.push({ name: ggufName, ne: [...info.shape].reverse(), type: info.shape.length === 1 ? 'F32' : type, data });
  };
  await add('model.embed_tokens.weight', 'token_embd.weight');
  for (let l = 0; l < c.numLayers; l++) {
    const n = layerTensorNames(l);
    await add(n.attnNorm, `blk.${l}.attn_norm.weight`);
    await add(n.wq, `blk.${l}.attn_q.weight`, c.numHeads);
    await add(n.wk, `blk.${l}.attn_k.weight`, c.numKvHeads);
    await add(n.wv, `blk.${l}.attn_v.weight`);
    await add(n.wo, `blk.${l}.attn_output.weight`);
    await add(n.mlpNorm, `blk.${l}.ffn_norm.weight`);
    await add(n.wGate, `blk.${l}.ffn_gate.weight`);
    await add(n.wUp, `blk.${l}.ffn_up.weight`);
    await add(n.wDown, `blk.${l}.ffn_down.weight`);
  }
  await add('model.norm.weight', 'output_norm.weight');
  const model = tokenizerJson.model as { vocab: Record<string, number>; merges: [string, string][] };
  const tokens: string[] = [];
  for (const [t, id] of Object.entries(model.vocab)) tokens[id] = t;
  const types = tokens.map(() => 1);
  for (const a of tokenizerJson.added_tokens as { id: number; special: boolean }[]) types[a.id] = a.special ? 3 : 4;
  const u32 = (value: number): GgufWriteValue => ({ type: 'u32', value });
  const meta: Record<string, GgufWriteValue> = {
    'general.architecture': { type: 'string', value: 'llama' },
    'general.name': { type: 'string', value: 'hip-testbed-mini (test conversion)' },
    'llama.context_length': u32(c.maxPositionEmbeddings),
    'llama.embedding_length': u32(c.hiddenSize),
    'llama.block_count': u32(c.numLayers),
    'llama.feed_forward_length': u32(c.intermediateSize),
    'llama.attention.head_count': u32(c.numHeads),
    'llama.attention.head_count_kv': u32(c.numKvHeads),
    'llama.rope.dimension_count': u32(c.headDim),
    'llama.rope.freq_base': { type: 'f32', value: c.rope.theta },
    'llama.attention.layer_norm_rms_epsilon': { type: 'f32', value: c.rmsNormEps },
    'tokenizer.ggml.model': { type: 'string', value: 'gpt2' },
    'tokenizer.ggml.pre': { type: 'string', value: 'default' },
    'tokenizer.ggml.tokens': { type: 'array', of: 'string', value: tokens },
    'tokenizer.ggml.token_type': { type: 'array', of: 'i32', value: types },
    'tokenizer.ggml.merges': { type: 'array', of: 'string', value: model.merges.map((p) => p.join(' ')) },
    'tokenizer.ggml.bos_token_id': u32(0),
    'tokenizer.ggml.eos_token_id': u32(1),
    'tokenizer.ggml.add_bos_token': { type: 'bool', value: true },
    'tokenizer.chat_template': { type: 'string', value: '{% for m in messages %}{{ bos_token }}{{ m.content }}{{ eos_token }}{% endfor %}' },
  };
  return writeGguf(meta, tensors);
}

describe('hip-testbed-mini converted to GGUF (llama.cpp layout) matches the safetensors path', () => {
  const golden = JSON.parse(readFileSync(`${MINI}/golden.json`, 'utf8')) as {
    inputs: { input_ids: number[]; final_logits: number[] }[];
    tokenizer: { text: string; ids: number[]; ids_default_encode: number[] }[];
  };
  const tokenizerJson = JSON.parse(readFileSync(`${MINI}/tokenizer.json`, 'utf8')) as Record<string, unknown>;
  const hf = openModelPath(MINI).then(async (m) => ({ m, w: await loadLlamaWeightsF32(m.config, m.store) }));
  const ids = golden.inputs[1]!.input_ids; // 49 tokens of Python code

  for (const [type, tol] of [['F32', 1e-4], ['F16', 1e-3], ['Q8_0', 0.25]] as const) {
    it(`${type}: logits of a 49-token prompt agree (max |Δ| ≤ ${tol}), same argmax`, async () => {
      const { m, w } = await hf;
      const bytes = await hfToGguf(m, type, tokenizerJson);
      const g = await openGgufFile(bufferSource(`mini-${type}.gguf`, bytes));
      expect(g.config.tieWordEmbeddings).toBe(true);
      expect({ ...g.config, maxPositionEmbeddings: 0, rmsNormEps: 0 }).toEqual({ ...m.config, maxPositionEmbeddings: 0, rmsNormEps: 0, modelType: 'llama' });
      const gw = await loadLlamaWeightsF32(g.config, g.store);
      const a = new LlamaCpu(m.config, w, { capacity: 64 }).forward(ids);
      const b = new LlamaCpu(g.config, gw, { capacity: 64 }).forward(ids);
      let max = 0;
      let argA = 0;
      let argB = 0;
      for (let i = 0; i < a.length; i++) {
        max = Math.max(max, Math.abs(a[i]! - b[i]!));
        if (a[i]! > a[argA]!) argA = i;
        if (b[i]! > b[argB]!) argB = i;
      }
      console.log(`GGUF ${type} (${(bytes.length / 2 ** 20).toFixed(1)} MiB): max |Δ logit| vs safetensors = ${max.toExponential(2)}`);
      expect(max).toBeLessThanOrEqual(tol);
      expect(argB).toBe(argA);
      if (type === 'F32') {
        // The GGUF's embedded byte-level BPE tokenizer gives golden's ids too.
        for (const t of golden.tokenizer) {
          expect(g.tokenizer.encode(t.text, { addBos: false })).toEqual(t.ids);
          expect(g.tokenizer.encode(t.text)).toEqual(t.ids_default_encode);
          expect(g.tokenizer.decode(t.ids)).toBe(t.text);
        }
        // tokenizer.chat_template is used, with the GGUF's special tokens.
        expect(encodeChat(g.tokenizer, [{ role: 'user', content: 'Hi' }])).toEqual([0, ...g.tokenizer.encode('Hi', { addBos: false }), 1]);
      }
    });
  }
});

describe('malformed GGUF → clear errors, never a hang', () => {
  const u32 = (value: number): GgufWriteValue => ({ type: 'u32', value });
  const good = writeGguf(
    {
      'general.architecture': { type: 'string', value: 'llama' },
      'llama.embedding_length': u32(64),
      'tokenizer.ggml.tokens': { type: 'array', of: 'string', value: ['a', 'b', 'c'] },
    },
    [
      { name: 'token_embd.weight', ne: [64, 3], type: 'F32', data: new Float32Array(192) },
      { name: 'blk.0.attn_q.weight', ne: [64, 64], type: 'Q8_0', data: new Float32Array(4096) },
    ],
  );
  const write = (name: string, bytes: Uint8Array) => {
    const p = join(dir, name);
    writeFileSync(p, bytes);
    return p;
  };
  async function err(p: Promise<unknown>): Promise<HipAttnError> {
    const e = await p.then(() => undefined, (x: unknown) => x);
    expect(e).toBeInstanceOf(HipAttnError);
    return e as HipAttnError;
  }
  const open = async (name: string, bytes: Uint8Array) => {
    const src = await fileSource(write(name, bytes));
    return readGguf(src).catch(async (e: unknown) => {
      await src.close();
      throw e;
    });
  };

  it('the well-formed file reads', async () => {
    const g = await open('good.gguf', good);
    expect(g.tensors.get('blk.0.attn_q.weight')!.byteLength).toBe(128 * 34);
    await g.source.close();
  });

  it('every truncation point gives MODEL_FORMAT naming the file', async () => {
    const cuts = new Set<number>([0, 3, 4, 8, 23, 24, 30, 60, 100, 200, good.length - 1]);
    for (let i = 0; i < 12; i++) cuts.add(Math.floor(rng.nextFloat() * good.length));
    for (const cut of cuts) {
      const e = await err(open(`cut${cut}.gguf`, good.subarray(0, cut)));
      expect(e.code).toBe('MODEL_FORMAT');
      expect(e.message).toContain(`cut${cut}.gguf`);
    }
  });

  it('bad magic, unsupported version', async () => {
    const b = good.slice();
    b[0] = 0x47 ^ 1;
    expect((await err(open('magic.gguf', b))).message).toContain('not a GGUF file');
    const v = good.slice();
    new DataView(v.buffer).setUint32(4, 1, true);
    expect(await err(open('v1.gguf', v))).toMatchObject({ code: 'UNSUPPORTED', message: expect.stringContaining('version 1') });
  });

  it('absurd counts (tensor count, array length, string length) are caught before allocating', async () => {
    const b = good.slice();
    new DataView(b.buffer).setBigUint64(8, 0xffffffffn, true); // tensor count
    expect((await err(open('count.gguf', b))).code).toBe('MODEL_FORMAT');
    // array length of tokenizer.ggml.tokens: find its element-type field and patch the u64 after it
    const text = new TextEncoder().encode('tokenizer.ggml.tokens');
    const at = indexOf(good, text) + text.length + 4 + 4; // key, value type ARRAY, element type STRING
    const c = good.slice();
    new DataView(c.buffer).setBigUint64(at, 1n << 40n, true);
    const e = await err(open('arraylen.gguf', c));
    expect(e.message).toContain('tokenizer.ggml.tokens');
    const d = good.slice();
    new DataView(d.buffer).setBigUint64(at + 8, 1n << 50n, true); // first string's length
    expect((await err(open('strlen.gguf', d))).message).toContain('tokenizer.ggml.tokens');
  });

  it('tensor data beyond the end of the file, misaligned offset, unknown type, unsupported type', async () => {
    const patchTensor = (name: string, field: 'type' | 'offset', value: number) => {
      const b = good.slice();
      const nameBytes = new TextEncoder().encode(name);
      const at = indexOf(b, nameBytes) + nameBytes.length + 4 + 2 * 8; // n_dims + 2 dims
      const dv = new DataView(b.buffer);
      if (field === 'type') dv.setUint32(at, value, true);
      else dv.setBigUint64(at + 4, BigInt(value), true);
      return b;
    };
    const far = await err(open('far.gguf', patchTensor('blk.0.attn_q.weight', 'offset', 1 << 20)));
    expect(far.message).toMatch(/blk\.0\.attn_q\.weight.*beyond the end/);
    const mis = await err(open('mis.gguf', patchTensor('blk.0.attn_q.weight', 'offset', 800 + 3)));
    expect(mis.message).toContain('not aligned');
    const unk = await err(open('unk.gguf', patchTensor('token_embd.weight', 'type', 99)));
    expect(unk.message).toMatch(/token_embd\.weight.*unknown ggml type 99/);
    // Q4_0 is a known type: the header reads, converting the tensor is refused.
    const q4 = writeGguf({}, [{ name: 't', ne: [32], type: 'F32', data: new Float32Array(32) }]);
    const tpos = indexOf(q4, new TextEncoder().encode('t')) + 1 + 4 + 8;
    new DataView(q4.buffer).setUint32(tpos, 2, true); // Q4_0: 18 bytes per 32, fits in the 128 written
    const g = await open('q4.gguf', q4);
    const { readGgufTensorF32 } = await import('./gguf.js');
    expect(await err(readGgufTensorF32(g, g.tensors.get('t')!))).toMatchObject({ code: 'UNSUPPORTED', message: expect.stringContaining('Q4_0') });
    await g.source.close();
  });

  it('a rope_freqs tensor (llama.cpp Llama 3.1) becomes freq_factors RoPE scaling; qwen2 keeps Q/K rows as stored', async () => {
    const meta = (arch: string): Record<string, GgufWriteValue> => ({
      'general.architecture': { type: 'string', value: arch },
      [`${arch}.embedding_length`]: u32(8),
      [`${arch}.block_count`]: u32(1),
      [`${arch}.feed_forward_length`]: u32(32),
      [`${arch}.attention.head_count`]: u32(2),
      [`${arch}.attention.head_count_kv`]: u32(1),
      [`${arch}.attention.layer_norm_rms_epsilon`]: { type: 'f32', value: 1e-6 },
      [`${arch}.rope.freq_base`]: { type: 'f32', value: 500000 },
      [`${arch}.context_length`]: u32(128),
    });
    const q = new Float32Array(64).map((_, i) => i);
    const tensors = (extra: GgufWriteTensor[]): GgufWriteTensor[] => [
      { name: 'token_embd.weight', ne: [8, 4], type: 'F32', data: new Float32Array(32) },
      { name: 'blk.0.attn_q.weight', ne: [8, 8], type: 'F32', data: q },
      ...extra,
    ];
    const { openGgufModel } = await import('./gguf.js');
    const llama = await openGgufModel(bufferSource('l.gguf', writeGguf(meta('llama'), tensors([{ name: 'rope_freqs.weight', ne: [2], type: 'F32', data: new Float32Array([1, 8]) }]))));
    expect(llama.config.rope).toEqual({ theta: 500000, scaling: { type: 'freq_factors', factors: [1, 8] } });
    expect(llama.config.headDim).toBe(4);
    // llama: rows unpermuted (head rows [0, 2, 1, 3] of the file's [0, 1, 2, 3]), qwen2: as stored
    const lq = await llama.store.readF32('model.layers.0.self_attn.q_proj.weight');
    expect(Array.from(lq.subarray(0, 32))).toEqual([...q.subarray(0, 8), ...q.subarray(16, 24), ...q.subarray(8, 16), ...q.subarray(24, 32)]);
    // Raw bytes and f16 bits (for GPU upload) come in the same Hugging Face row order.
    expect(new Float32Array((await llama.store.readRaw('model.layers.0.self_attn.q_proj.weight')).slice().buffer)).toEqual(lq);
    expect(Array.from(await llama.store.readF16Bits('model.layers.0.self_attn.q_proj.weight'))).toEqual(Array.from(lq, f32ToF16Bits));
    const qwen = await openGgufModel(bufferSource('q.gguf', writeGguf(meta('qwen2'), tensors([]))));
    expect(qwen.config.modelType).toBe('qwen2');
    expect(await qwen.store.readF32('model.layers.0.self_attn.q_proj.weight')).toEqual(q);
  });

  it('missing metadata and unsupported architectures are named', async () => {
    const e = await err(openGgufFile(bufferSource('nometa.gguf', good)));
    expect(e.message).toMatch(/nometa\.gguf.*(head_count|embedding_length|block_count)/);
    const arch = writeGguf({ 'general.architecture': { type: 'string', value: 'gemma' } }, []);
    expect(await err(openGgufFile(bufferSource('gemma.gguf', arch)))).toMatchObject({ code: 'UNSUPPORTED', message: expect.stringContaining('"gemma"') });
  });
});

function indexOf(hay: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  throw new Error('needle not found');
}
