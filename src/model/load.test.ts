/**
 * Opening models: Node paths, browser-style in-memory files (Blobs), and a directory whose
 * config does not match its tensors.
 */
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { HipAttnError } from '../errors.js';
import { blobSource, mapDirectory } from './byte-source.js';
import { LlamaCpu } from './llama-cpu.js';
import { openGgufFile, openHfModel } from './load.js';
import { openModelPath } from './node-load.js';
import { loadLlamaWeightsF32 } from './weights.js';

const MINI = resolve('models/hip-testbed-mini');
const dir = mkdtempSync(join(tmpdir(), 'hipattn-load-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A copy of the mini model directory (files symlinked) with an edited config.json. */
function withConfig(name: string, edit: (c: Record<string, unknown>) => void): string {
  const d = join(dir, name);
  mkdirSync(d, { recursive: true });
  for (const f of readdirSync(MINI)) if (f !== 'config.json') symlinkSync(join(MINI, f), join(d, f));
  const c = JSON.parse(readFileSync(join(MINI, 'config.json'), 'utf8')) as Record<string, unknown>;
  edit(c);
  writeFileSync(join(d, 'config.json'), JSON.stringify(c));
  return d;
}

describe('opening models', () => {
  it('a Hugging Face directory from browser-style Blobs gives the same logits as from disk', async () => {
    const files = new Map<string, Blob>();
    for (const f of readdirSync(MINI)) files.set(f, new Blob([readFileSync(join(MINI, f))]));
    const fromBlobs = await openHfModel(mapDirectory('picked-files', files));
    const fromDisk = await openModelPath(MINI);
    expect(fromBlobs.config).toEqual(fromDisk.config);
    expect(fromBlobs.generation).toEqual(fromDisk.generation);
    expect(fromBlobs.generation.eosTokenIds).toEqual([1]);
    const ids = fromDisk.tokenizer.encode('The pass key is');
    expect(fromBlobs.tokenizer.encode('The pass key is')).toEqual(ids);
    const a = new LlamaCpu(fromDisk.config, await loadLlamaWeightsF32(fromDisk.config, fromDisk.store), { capacity: 16 }).forward(ids);
    const b = new LlamaCpu(fromBlobs.config, await loadLlamaWeightsF32(fromBlobs.config, fromBlobs.store), { capacity: 16 }).forward(ids);
    expect(b).toEqual(a);
    await fromDisk.store.close();
  });

  it('a GGUF from a Blob', async () => {
    const g = await openGgufFile(blobSource('stories.gguf', new Blob([readFileSync('models/stories260K/stories260K.gguf')])));
    expect(g.format).toBe('gguf');
    expect(g.config.numLayers).toBe(5);
    expect(g.tokenizer.decode(g.tokenizer.encode('Lily'), { skipSpecialTokens: true })).toBe('Lily');
  });

  it('tensor shapes are checked against config.json before any weight is read', async () => {
    const d = withConfig('wrong-ffn', (c) => (c.intermediate_size = 512));
    const e = await openModelPath(d).then(() => undefined, (x: unknown) => x);
    expect(e).toBeInstanceOf(HipAttnError);
    expect((e as HipAttnError).code).toBe('MODEL_FORMAT');
    expect((e as HipAttnError).message).toMatch(/model\.safetensors: tensor "model\.layers\.0\.mlp\.gate_proj\.weight" has shape \[768, 256\] but the config implies \[512, 256\]/);
    const untied = withConfig('untied', (c) => (c.tie_word_embeddings = false));
    await expect(openModelPath(untied)).rejects.toThrow(/"lm_head\.weight" is missing and the config does not tie/);
    const layers = withConfig('layers', (c) => (c.num_hidden_layers = 7));
    await expect(openModelPath(layers)).rejects.toThrow(/tensor "model\.layers\.6\.input_layernorm\.weight" is missing/);
  });

  it('paths that are not models say so', async () => {
    await expect(openModelPath(join(dir, 'nothing-here'))).rejects.toThrow(/cannot open/);
    writeFileSync(join(dir, 'text.bin'), 'hello world');
    await expect(openModelPath(join(dir, 'text.bin'))).rejects.toThrow(/neither a model directory nor a GGUF file/);
    await expect(openModelPath(dir)).rejects.toThrow(/config\.json not found/);
  });
});
