/**
 * The generation loop, for any causal LM with a KV cache (the CPU forward pass now, the WebGPU
 * one later): prefill the prompt, then sample one token at a time, streaming text that never
 * splits a UTF-8 character and never shows the start of a stop string.
 */
import { HipAttnError } from '../errors.js';
import type { ForwardOptions } from './llama-cpu.js';
import { Sampler, type SamplingOptions } from './sampling.js';
import { StreamDecoder, type TextTokenizer } from './tokenizer.js';

/** What the generation loop needs from a model. */
export interface CausalLM {
  /** Appends tokens to the sequence and returns the logits of the last one (CPU: at once; WebGPU: a promise). */
  forward(tokens: ArrayLike<number>, options?: ForwardOptions): Float32Array | Promise<Float32Array>;
  /** Tokens held in the KV cache. */
  readonly position: number;
  reset(): void;
}

export interface GenerateOptions extends SamplingOptions {
  /** Upper bound on generated tokens. */
  maxNewTokens: number;
  /**
   * Token ids that end generation (not emitted). Default: the tokenizer's EOS ids and BOS — a
   * generated BOS starts a new document (llama2.c models such as stories260K end a story with
   * BOS and never emit EOS).
   */
  stopTokenIds?: readonly number[];
  /** Strings that end generation (not emitted, nor anything after them). */
  stopStrings?: readonly string[];
  /** Prefill chunk size (default 128). */
  chunkSize?: number;
  /**
   * Called after each prefill chunk with the prompt tokens done so far and the prompt's length
   * (the last call has done = total, before the first token is sampled).
   */
  onPrefillProgress?: (done: number, total: number) => void;
  /** Keep the KV cache and continue after what it holds, instead of starting afresh. Default false. */
  continueSequence?: boolean;
  signal?: AbortSignal;
}

export interface GeneratedToken {
  /** The token, or null for a last chunk of held-back text after the final token. */
  id: number | null;
  /** Text this token adds to the output (may be '' while a character or a possible stop string is incomplete). */
  text: string;
}

export type FinishReason = 'length' | 'stop' | 'aborted';

export interface GenerationResult {
  ids: number[];
  text: string;
  finishReason: FinishReason;
  promptTokens: number;
  /** Wall-clock milliseconds of the prompt's forward pass and of the decoding loop. */
  prefillMs: number;
  decodeMs: number;
}

/** Length of the longest suffix of `text` that is a proper prefix of some stop string. */
function heldBackLength(text: string, stops: readonly string[]): number {
  let keep = 0;
  for (const s of stops) {
    for (let len = Math.min(s.length - 1, text.length); len > keep; len--) {
      if (text.endsWith(s.slice(0, len))) {
        keep = len;
        break;
      }
    }
  }
  return keep;
}

/**
 * Generates tokens after `promptIds`, yielding each with the text it adds. The return value
 * (of the generator) summarises the run.
 */
export async function* generateTokens(
  lm: CausalLM,
  tokenizer: TextTokenizer,
  promptIds: readonly number[],
  options: GenerateOptions,
): AsyncGenerator<GeneratedToken, GenerationResult, undefined> {
  const { maxNewTokens } = options;
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0) throw new HipAttnError('INVALID_OPTION', `maxNewTokens must be an integer ≥ 0, got ${maxNewTokens}`);
  if (promptIds.length === 0 && !(options.continueSequence && lm.position > 0)) {
    throw new HipAttnError('INVALID_OPTION', 'the prompt is empty: pass at least one token (e.g. BOS)');
  }
  const sampler = new Sampler(options);
  const defaultStops = [...tokenizer.eosTokenIds, ...(tokenizer.bosTokenId !== undefined ? [tokenizer.bosTokenId] : [])];
  const stopIds = new Set(options.stopTokenIds ?? defaultStops);
  const stops = (options.stopStrings ?? []).filter((s) => s.length > 0);
  if (!options.continueSequence) lm.reset();

  const t0 = performance.now();
  const forwardOptions: ForwardOptions = { chunkSize: options.chunkSize ?? 128, ...(options.onPrefillProgress ? { onProgress: options.onPrefillProgress } : {}) };
  let logits = promptIds.length > 0 ? await lm.forward(promptIds, forwardOptions) : undefined;
  const prefillMs = performance.now() - t0;
  if (!logits) throw new HipAttnError('INVALID_OPTION', 'continueSequence without new prompt tokens is not supported: pass the last token again');

  const decoder = new StreamDecoder(tokenizer, promptIds);
  const ids: number[] = [];
  let text = ''; // everything decoded so far
  let shown = 0; // characters of `text` already yielded
  let finishReason: FinishReason = 'length';
  let stoppedByString = false;
  const t1 = performance.now();
  while (ids.length < maxNewTokens) {
    if (options.signal?.aborted) {
      finishReason = 'aborted';
      break;
    }
    const id = sampler.sample(logits);
    if (stopIds.has(id)) {
      finishReason = 'stop';
      break;
    }
    ids.push(id);
    text += decoder.push(id);
    if (stops.length > 0) {
      // Shown text never ends with the start of a stop string, so a match begins at or after `shown`.
      const hit = stops.map((s) => text.indexOf(s, shown)).filter((i) => i >= 0);
      if (hit.length > 0) {
        const cut = Math.min(...hit);
        const delta = text.slice(shown, cut);
        text = text.slice(0, cut);
        shown = cut;
        stoppedByString = true;
        yield { id, text: delta };
        finishReason = 'stop';
        break;
      }
    }
    const visible = text.length - heldBackLength(text, stops);
    const delta = visible > shown ? text.slice(shown, visible) : '';
    shown = Math.max(shown, visible);
    yield { id, text: delta };
    if (ids.length < maxNewTokens) logits = await lm.forward([id]);
  }
  if (!stoppedByString) {
    // Text held back for a stop string that never came, or an incomplete final character.
    text += decoder.flush();
    if (shown < text.length) yield { id: null, text: text.slice(shown) };
  }
  return { ids, text, finishReason, promptTokens: promptIds.length, prefillMs, decodeMs: performance.now() - t1 };
}

/** Runs generateTokens to the end and returns the result. */
export async function generate(lm: CausalLM, tokenizer: TextTokenizer, promptIds: readonly number[], options: GenerateOptions): Promise<GenerationResult> {
  const it = generateTokens(lm, tokenizer, promptIds, options);
  for (;;) {
    const r = await it.next();
    if (r.done) return r.value;
  }
}
