/**
 * Opening a model: a Hugging Face directory (config.json, safetensors, tokenizer files) or a
 * GGUF file, from any ModelDirectory / ByteSource (Node paths: node-load.ts). Opening reads
 * headers, config and tokenizer and checks every tensor's shape against the config; the
 * weights themselves are read later, tensor by tensor, from `store`.
 */
import { HipAttnError } from '../errors.js';
import { type ByteSource, type ModelDirectory, readJsonFile, readTextFile } from './byte-source.js';
import { type LlamaConfig, parseLlamaConfig, showValue, tokenIdList } from './config.js';
import { openGgufModel } from './gguf.js';
import { ggufTokenizer } from './gguf-tokenizer.js';
import { openSafetensorsDir } from './safetensors.js';
import type { TensorStore } from './tensor-store.js';
import { HfTokenizer, type TextTokenizer } from './tokenizer.js';
import { checkTensorShapes } from './weights.js';

/** Sampling defaults a model ships with (generation_config.json); all optional. */
export interface GenerationDefaults {
  eosTokenIds: number[];
  temperature?: number;
  topP?: number;
  topK?: number;
  doSample?: boolean;
  maxNewTokens?: number;
}

export interface OpenedModel {
  format: 'safetensors' | 'gguf';
  /** The directory or file it came from. */
  name: string;
  config: LlamaConfig;
  /** Weights by Hugging Face name, read on demand. Close it when done. */
  store: TensorStore;
  tokenizer: TextTokenizer;
  generation: GenerationDefaults;
}

/**
 * Parses generation_config.json. Unknown fields are ignored and null counts as absent (as in
 * transformers); a field this library uses but with a wrong type or range (a negative
 * temperature, top_p 0, an EOS id outside the vocabulary) is a MODEL_FORMAT error naming the
 * file and the field, rather than a confusing "bad option" later at generation time.
 * `where` names the file in errors; `vocabSize` (when known) bounds the EOS ids.
 */
export function parseGenerationConfig(json: unknown, fallbackEos: readonly number[], where = 'generation_config.json', vocabSize = Number.MAX_SAFE_INTEGER): GenerationDefaults {
  if (json === undefined) return { eosTokenIds: [...fallbackEos] };
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new HipAttnError('MODEL_FORMAT', `${where}: not a JSON object`);
  const g = json as Record<string, unknown>;
  const field = (k: string, ok: (v: number) => boolean, rule: string): number | undefined => {
    const v = g[k];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !ok(v)) throw new HipAttnError('MODEL_FORMAT', `${where}: "${k}" must be ${rule}, got ${showValue(v)}`);
    return v;
  };
  const eos = tokenIdList(where, g.eos_token_id, 'eos_token_id', vocabSize);
  const out: GenerationDefaults = { eosTokenIds: [...new Set([...eos, ...fallbackEos])] };
  const t = field('temperature', (v) => Number.isFinite(v) && v >= 0, 'a finite number ≥ 0');
  if (t !== undefined) out.temperature = t;
  const p = field('top_p', (v) => v > 0 && v <= 1, 'a number in (0, 1]');
  if (p !== undefined) out.topP = p;
  const k = field('top_k', (v) => Number.isSafeInteger(v) && v >= 0, 'an integer ≥ 0');
  if (k !== undefined) out.topK = k;
  if (g.do_sample !== undefined && g.do_sample !== null) {
    if (typeof g.do_sample !== 'boolean') throw new HipAttnError('MODEL_FORMAT', `${where}: "do_sample" must be true or false, got ${showValue(g.do_sample)}`);
    out.doSample = g.do_sample;
  }
  const m = field('max_new_tokens', (v) => Number.isSafeInteger(v) && v >= 1, 'a positive integer');
  if (m !== undefined) out.maxNewTokens = m;
  return out;
}

function checkVocab(config: LlamaConfig, tokenizer: TextTokenizer, where: string): void {
  if (tokenizer.vocabSize > config.vocabSize) {
    throw new HipAttnError('MODEL_FORMAT', `${where}: the tokenizer has ${tokenizer.vocabSize} tokens but the model's vocabulary is ${config.vocabSize}`);
  }
}

/** Opens a Hugging Face model directory. */
export async function openHfModel(dir: ModelDirectory): Promise<OpenedModel> {
  const configJson = await readJsonFile(dir, 'config.json');
  if (configJson === undefined) throw new HipAttnError('MODEL_FORMAT', `${dir.name}: config.json not found (not a Hugging Face model directory?)`);
  const config = parseLlamaConfig(configJson, `${dir.name}/config.json`);
  const genJson = await readJsonFile(dir, 'generation_config.json');
  const generation = parseGenerationConfig(genJson, config.eosTokenIds, `${dir.name}/generation_config.json`, config.vocabSize);

  const tokenizerJson = await readJsonFile(dir, 'tokenizer.json');
  if (tokenizerJson === undefined) throw new HipAttnError('TOKENIZER', `${dir.name}: tokenizer.json not found (only fast-tokenizer files are supported)`);
  const tokCfg = await readJsonFile(dir, 'tokenizer_config.json');
  const jinja = await readTextFile(dir, 'chat_template.jinja');
  const tokenizer = new HfTokenizer({
    tokenizerJson,
    tokenizerConfig: (typeof tokCfg === 'object' && tokCfg !== null ? tokCfg : {}) as Record<string, unknown>,
    ...(jinja !== undefined ? { chatTemplate: jinja } : {}),
    ...(config.bosTokenId !== undefined ? { bosTokenId: config.bosTokenId } : {}),
    eosTokenIds: generation.eosTokenIds,
    name: `${dir.name}/tokenizer.json`,
  });
  checkVocab(config, tokenizer, dir.name);
  generation.eosTokenIds = [...new Set([...generation.eosTokenIds, ...tokenizer.eosTokenIds])];

  const store = await openSafetensorsDir(dir);
  try {
    checkTensorShapes(config, store);
  } catch (e) {
    await store.close();
    throw e;
  }
  return { format: 'safetensors', name: dir.name, config, store, tokenizer, generation };
}

/** Opens a GGUF file (weights, config and tokenizer all come from it). */
export async function openGgufFile(source: ByteSource): Promise<OpenedModel> {
  try {
    const { gguf, config, store } = await openGgufModel(source);
    const tokenizer = ggufTokenizer(gguf);
    checkVocab(config, tokenizer, source.name);
    checkTensorShapes(config, store, `${config.modelType === 'qwen2' ? 'qwen2' : 'llama'}.block_count`);
    const eos = [...new Set([...config.eosTokenIds, ...tokenizer.eosTokenIds])];
    return { format: 'gguf', name: source.name, config, store, tokenizer, generation: { eosTokenIds: eos } };
  } catch (e) {
    await source.close();
    throw e;
  }
}
