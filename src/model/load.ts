/**
 * Opening a model: a Hugging Face directory (config.json, safetensors, tokenizer files) or a
 * GGUF file, from any ModelDirectory / ByteSource (Node paths: node-load.ts). Opening reads
 * headers, config and tokenizer and checks every tensor's shape against the config; the
 * weights themselves are read later, tensor by tensor, from `store`.
 */
import { HipAttnError } from '../errors.js';
import { type ByteSource, type ModelDirectory, readJsonFile, readTextFile } from './byte-source.js';
import { type LlamaConfig, parseLlamaConfig } from './config.js';
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

function idList(v: unknown): number[] {
  const list = Array.isArray(v) ? v : v === undefined || v === null ? [] : [v];
  return list.filter((x): x is number => typeof x === 'number' && Number.isInteger(x) && x >= 0);
}

/** Parses generation_config.json (unknown fields ignored; wrongly typed ones dropped). */
export function parseGenerationConfig(json: unknown, fallbackEos: readonly number[]): GenerationDefaults {
  const g = (typeof json === 'object' && json !== null ? json : {}) as Record<string, unknown>;
  const num = (k: string): number | undefined => (typeof g[k] === 'number' && Number.isFinite(g[k]) ? (g[k] as number) : undefined);
  const eos = idList(g.eos_token_id);
  const out: GenerationDefaults = { eosTokenIds: [...new Set([...eos, ...fallbackEos])] };
  const t = num('temperature');
  if (t !== undefined) out.temperature = t;
  const p = num('top_p');
  if (p !== undefined) out.topP = p;
  const k = num('top_k');
  if (k !== undefined) out.topK = k;
  if (typeof g.do_sample === 'boolean') out.doSample = g.do_sample;
  const m = num('max_new_tokens');
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
  const generation = parseGenerationConfig(genJson, config.eosTokenIds);

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
    checkTensorShapes(config, store);
    const eos = [...new Set([...config.eosTokenIds, ...tokenizer.eosTokenIds])];
    return { format: 'gguf', name: source.name, config, store, tokenizer, generation: { eosTokenIds: eos } };
  } catch (e) {
    await source.close();
    throw e;
  }
}
