/**
 * A loaded model: tokenizer + config + a backend, with the generation API JavaScript users know
 * from transformers.js and WebLLM — a prompt (text, chat messages or token ids) in, a stream of
 * tokens out.
 *
 *     const model = await loadModel(undefined, { attention: 'hip' });   // the embedded hip-testbed-mini
 *     for await (const t of model.stream('The pass key is', { maxNewTokens: 16 })) process.stdout.write(t.text);
 */
import { HipAttnError } from '../errors.js';
import type { ResolvedAttentionConfig } from '../attention/method.js';
import { type ChatMessage, chatText, DEFAULT_CHAT_STOP, encodeChat, usesDefaultChatTemplate } from '../model/chat-template.js';
import { TokenizeWorker } from './tokenize-worker.js';
import type { LlamaConfig } from '../model/config.js';
import { type GeneratedToken, type GenerateOptions, type GenerationResult, generateTokens } from '../model/generate.js';
import type { ForwardOptions } from '../model/llama-cpu.js';
import type { GenerationDefaults } from '../model/load.js';
import type { TensorStore } from '../model/tensor-store.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import type { ModelBackend } from './backend.js';

/** A prompt: text (BOS added as the tokenizer does by default), chat messages (chat template applied) or token ids. */
export type Prompt = string | { messages: readonly ChatMessage[] } | { ids: readonly number[] };

/** Generation options; the model's generation_config.json supplies defaults for sampling. */
export type StreamOptions = Partial<GenerateOptions> & {
  /** Called with each token as it is generated (besides the async iterator). */
  onToken?: (token: GeneratedToken) => void;
};

export interface GenerationStats extends GenerationResult {
  /** Prompt tokens per second and generated tokens per second. */
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
}

/**
 * What `model.stream` returns: an async generator of tokens (its return value is the
 * statistics) that also holds them as `stats` once it has ended, for `for await` loops, which
 * drop the return value.
 */
export type GenerationStream = AsyncGenerator<GeneratedToken, GenerationStats, undefined> & {
  /** The totals and speeds, set when generation ends (undefined before, and after an error). */
  readonly stats?: GenerationStats;
};

export class HipModel {
  constructor(
    /** Where the model came from (path or hub id). */
    readonly name: string,
    readonly config: LlamaConfig,
    readonly tokenizer: TextTokenizer,
    readonly generationDefaults: GenerationDefaults,
    readonly attention: ResolvedAttentionConfig,
    readonly backend: ModelBackend,
    private readonly store: TensorStore,
  ) {}

  /** The tokenizer's worker thread (started by the first long prompt of encodeAsync), or null where there is none. */
  private worker: Promise<TokenizeWorker | null> | undefined;

  /** Context capacity in tokens (the KV cache's size). */
  get contextLength(): number {
    return this.backend.capacity;
  }

  /** Token ids of a prompt. */
  encode(prompt: Prompt): number[] {
    if (typeof prompt === 'string') return this.tokenizer.encode(prompt);
    if ('messages' in prompt) return encodeChat(this.tokenizer, prompt.messages, { addGenerationPrompt: true });
    if ('ids' in prompt) {
      for (const id of prompt.ids) {
        if (!Number.isInteger(id) || id < 0 || id >= this.config.vocabSize) {
          throw new HipAttnError('INVALID_OPTION', `token id ${id} is outside the vocabulary [0, ${this.config.vocabSize})`);
        }
      }
      return [...prompt.ids];
    }
    throw new HipAttnError('INVALID_OPTION', 'a prompt is a string, { messages } or { ids }');
  }

  /**
   * The same ids as `encode`, with prompts of at least `offThreadChars` characters (default
   * 16 384) tokenized in a worker thread, so that the event loop keeps running meanwhile (Node,
   * from the built package: see runtime/tokenize-worker.ts; elsewhere this is `encode`). A
   * server tokenizes its requests this way.
   */
  async encodeAsync(prompt: Prompt, offThreadChars = 16_384): Promise<number[]> {
    if (typeof prompt !== 'string' && !('messages' in prompt)) return this.encode(prompt);
    const chat = typeof prompt === 'string' ? undefined : chatText(this.tokenizer, prompt.messages, { addGenerationPrompt: true });
    const text = chat ? chat.text : (prompt as string);
    // The chat template is rendered once (above), whichever thread tokenizes.
    const here = (): number[] => (chat ? [...chat.prefix, ...this.tokenizer.encode(chat.text, { addBos: false })] : this.tokenizer.encode(text));
    if (text.length < offThreadChars) return here();
    this.worker ??= TokenizeWorker.start(this.tokenizer).catch(() => null);
    const worker = await this.worker;
    if (!worker) return here();
    return chat ? [...chat.prefix, ...(await worker.encode(chat.text, { addBos: false }))] : await worker.encode(text);
  }

  private options(opts: StreamOptions, promptTokens: number): GenerateOptions {
    const g = this.generationDefaults;
    const sampleByDefault = g.doSample ?? false;
    const o: GenerateOptions = {
      maxNewTokens: opts.maxNewTokens ?? g.maxNewTokens ?? 256,
      temperature: opts.temperature ?? (sampleByDefault ? g.temperature ?? 1 : 0),
      topP: opts.topP ?? g.topP,
      topK: opts.topK ?? g.topK,
      seed: opts.seed,
      stopStrings: opts.stopStrings,
      stopTokenIds: opts.stopTokenIds,
      chunkSize: opts.chunkSize ?? defaultChunk(this.attention),
      onPrefillProgress: opts.onPrefillProgress,
      signal: opts.signal,
    };
    if (promptTokens + o.maxNewTokens > this.contextLength) {
      throw new HipAttnError(
        'INVALID_OPTION',
        `prompt (${promptTokens} tokens) + maxNewTokens (${o.maxNewTokens}) exceeds the context length ${this.contextLength}; load the model with a larger contextLength`,
      );
    }
    return o;
  }

  /**
   * Streams generated tokens. The totals and speeds are the generator's return value and,
   * once it has ended, `stream.stats`:
   *
   *     const stream = model.stream('Once', { maxNewTokens: 16 });
   *     for await (const t of stream) process.stdout.write(t.text);
   *     console.log(stream.stats?.decodeTokensPerSecond);
   */
  /**
   * Stop strings that end an assistant turn of this model's chat template beyond its EOS tokens:
   * `<|im_end|>` when the model has no template of its own and chat uses the ChatML default
   * (a base model does not emit EOS there); empty otherwise. Chat prompts stop at them.
   */
  get chatStopStrings(): readonly string[] {
    return usesDefaultChatTemplate(this.tokenizer) ? [DEFAULT_CHAT_STOP] : [];
  }

  stream(prompt: Prompt, opts: StreamOptions = {}): GenerationStream {
    const result: { stats?: GenerationStats } = {};
    const gen = this.run(prompt, opts, result);
    return Object.defineProperty(gen, 'stats', { get: () => result.stats, enumerable: true }) as GenerationStream;
  }

  private async *run(prompt: Prompt, opts: StreamOptions, result: { stats?: GenerationStats }): AsyncGenerator<GeneratedToken, GenerationStats, undefined> {
    const ids = this.encode(prompt);
    const o = this.options(opts, ids.length);
    if (typeof prompt === 'object' && 'messages' in prompt && this.chatStopStrings.length > 0) {
      o.stopStrings = [...(o.stopStrings ?? []), ...this.chatStopStrings];
    }
    const it = generateTokens(this.backend, this.tokenizer, ids, o);
    for (;;) {
      const r = await it.next();
      if (r.done) {
        result.stats = withSpeeds(r.value);
        return result.stats;
      }
      opts.onToken?.(r.value);
      yield r.value;
    }
  }

  /** Generates to the end and returns the text with statistics. */
  async generate(prompt: Prompt, opts: StreamOptions = {}): Promise<GenerationStats> {
    const it = this.stream(prompt, opts);
    for (;;) {
      const r = await it.next();
      if (r.done) return r.value;
    }
  }

  /** Low level: appends tokens to the sequence held in the KV cache and returns logits. */
  forward(tokens: ArrayLike<number>, options?: ForwardOptions): Promise<Float32Array> {
    return this.backend.forward(tokens, options);
  }

  /** Empties the KV cache and the attention states. */
  reset(): void {
    this.backend.reset();
  }

  async dispose(): Promise<void> {
    await (await this.worker)?.close();
    this.worker = undefined;
    await this.backend.dispose();
    await this.store.close();
  }
}

/** A prefill chunk that is a multiple of HiP's query block (so chunked = whole prefill). */
function defaultChunk(a: ResolvedAttentionConfig): number {
  const b = a.hip.blockSizeQ;
  return Math.max(b, Math.floor(512 / b) * b);
}

function withSpeeds(r: GenerationResult): GenerationStats {
  return {
    ...r,
    prefillTokensPerSecond: r.prefillMs > 0 ? (r.promptTokens / r.prefillMs) * 1000 : 0,
    decodeTokensPerSecond: r.decodeMs > 0 ? (r.ids.length / r.decodeMs) * 1000 : 0,
  };
}
