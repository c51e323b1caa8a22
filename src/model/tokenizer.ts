/**
 * Tokenizers behind one interface: Hugging Face tokenizer.json (through @huggingface/tokenizers)
 * and the vocabularies embedded in GGUF files (spm-tokenizer.ts). Plus streaming-safe
 * incremental decoding that never emits half a UTF-8 character.
 */
import { Tokenizer } from '@huggingface/tokenizers';
import { HipAttnError } from '../errors.js';
import type { SpmVocab } from './spm-tokenizer.js';
import { checkTokenizerJson } from './tokenizer-json.js';

export interface EncodeOptions {
  /**
   * undefined (default): the tokenizer's own default (a Hugging Face post-processor, e.g. one
   * that prepends BOS; GGUF's tokenizer.ggml.add_bos_token). true: the raw tokens with BOS in
   * front (TOKENIZER error if the model has none). false: the raw tokens, no special tokens added.
   */
  addBos?: boolean;
}

export interface DecodeOptions {
  /** Leave out special tokens (BOS, EOS, chat markers). Default false. */
  skipSpecialTokens?: boolean;
}

/**
 * What a tokenizer was built from, structured-cloneable, so that the same tokenizer can be built
 * again elsewhere (a worker thread: see runtime/tokenize-worker.ts and model/tokenizer-recipe.ts).
 */
export type TokenizerRecipe = { kind: 'hf'; init: HfTokenizerInit; addBosDefault?: boolean } | { kind: 'spm'; vocab: SpmVocab };

export interface TextTokenizer {
  /** How to build this tokenizer again (absent for tokenizers that cannot say). */
  readonly recipe?: TokenizerRecipe;
  readonly vocabSize: number;
  readonly bosTokenId: number | undefined;
  /** Token ids that end generation. */
  readonly eosTokenIds: readonly number[];
  /** Strings of the special tokens, as chat templates expect them (bos_token, eos_token, …). */
  readonly specialTokens: Readonly<Record<string, string>>;
  /** The Jinja chat template, if the model has one. */
  readonly chatTemplate: string | undefined;
  encode(text: string, options?: EncodeOptions): number[];
  decode(ids: readonly number[], options?: DecodeOptions): string;
  idToToken(id: number): string | undefined;
  tokenToId(token: string): number | undefined;
  /** True for control / added special tokens (skipped by decode with skipSpecialTokens). */
  isSpecial(id: number): boolean;
}

function tokenString(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return undefined;
}

/** Picks the chat template out of tokenizer_config.json's `chat_template` (a string, or a list of {name, template}). */
export function chatTemplateFromConfig(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) {
    const entries = value.filter((e): e is { name: string; template: string } => typeof e === 'object' && e !== null && typeof e.template === 'string');
    return (entries.find((e) => e.name === 'default') ?? entries[0])?.template;
  }
  return undefined;
}

export interface HfTokenizerInit {
  /** Parsed tokenizer.json. */
  tokenizerJson: unknown;
  /** Parsed tokenizer_config.json (may be empty). */
  tokenizerConfig?: Record<string, unknown>;
  /** A chat template from a separate chat_template.jinja file (takes precedence over the config's). */
  chatTemplate?: string;
  /** Fallbacks from config.json / generation_config.json. */
  bosTokenId?: number;
  eosTokenIds?: readonly number[];
  /** Name for error messages. */
  name?: string;
  /** Token ids must be below this (default: vocabulary entries + added tokens; see tokenizer-json.ts). */
  idLimit?: number;
}

/** A Hugging Face tokenizer.json tokenizer. */
export class HfTokenizer implements TextTokenizer {
  readonly vocabSize: number;
  readonly bosTokenId: number | undefined;
  readonly eosTokenIds: readonly number[];
  readonly specialTokens: Readonly<Record<string, string>>;
  readonly chatTemplate: string | undefined;
  readonly recipe: TokenizerRecipe;
  private readonly tok: Tokenizer;
  private readonly special: Set<number>;
  private readonly name: string;

  constructor(init: HfTokenizerInit) {
    this.recipe = { kind: 'hf', init };
    this.name = init.name ?? 'tokenizer.json';
    const cfg = init.tokenizerConfig ?? {};
    if (typeof init.tokenizerJson !== 'object' || init.tokenizerJson === null) {
      throw new HipAttnError('TOKENIZER', `${this.name}: not a tokenizer.json object`);
    }
    checkTokenizerJson(init.tokenizerJson as Record<string, unknown>, this.name, init.idLimit);
    try {
      this.tok = new Tokenizer(init.tokenizerJson, cfg);
    } catch (e) {
      throw new HipAttnError('TOKENIZER', `${this.name}: cannot build the tokenizer (${(e as Error).message})`, { cause: e });
    }
    const vocab = this.tok.get_vocab(true);
    let maxId = -1;
    for (const id of vocab.values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;
    this.special = new Set([...this.tok.get_added_tokens_decoder().entries()].filter(([, t]) => t.special).map(([id]) => id));

    const specialTokens: Record<string, string> = {};
    for (const key of ['bos_token', 'eos_token', 'unk_token', 'pad_token']) {
      const s = tokenString(cfg[key]);
      if (s !== undefined) specialTokens[key] = s;
    }
    const bosFromCfg = specialTokens.bos_token !== undefined ? this.tok.token_to_id(specialTokens.bos_token) : undefined;
    this.bosTokenId = bosFromCfg ?? init.bosTokenId;
    if (specialTokens.bos_token === undefined && this.bosTokenId !== undefined) {
      const s = this.tok.id_to_token(this.bosTokenId);
      if (s !== undefined) specialTokens.bos_token = s;
    }
    const eos = new Set<number>(init.eosTokenIds ?? []);
    const eosFromCfg = specialTokens.eos_token !== undefined ? this.tok.token_to_id(specialTokens.eos_token) : undefined;
    if (eosFromCfg !== undefined) eos.add(eosFromCfg);
    this.eosTokenIds = [...eos];
    if (specialTokens.eos_token === undefined && this.eosTokenIds.length > 0) {
      const s = this.tok.id_to_token(this.eosTokenIds[0]!);
      if (s !== undefined) specialTokens.eos_token = s;
    }
    this.specialTokens = specialTokens;
    this.chatTemplate = init.chatTemplate ?? chatTemplateFromConfig(cfg.chat_template);
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    if (options.addBos === undefined) return this.run('encoding', () => this.tok.encode(text).ids);
    const ids = this.run('encoding', () => this.tok.encode(text, { add_special_tokens: false }).ids);
    if (!options.addBos) return ids;
    if (this.bosTokenId === undefined) throw new HipAttnError('TOKENIZER', `${this.name}: addBos requested but the model has no BOS token`);
    return [this.bosTokenId, ...ids];
  }

  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    if (ids.length === 0) return ''; // @huggingface/tokenizers rejects empty input
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) throw new HipAttnError('TOKENIZER', `${this.name}: token id ${id} is outside the vocabulary of ${this.vocabSize}`);
    }
    return this.run('decoding', () => this.tok.decode([...ids], { skip_special_tokens: options.skipSpecialTokens ?? false }));
  }

  /** Runs a library call; its errors (a tokenizer.json that builds but cannot encode) become TOKENIZER errors naming the file. */
  private run<T>(what: string, f: () => T): T {
    try {
      return f();
    } catch (e) {
      if (e instanceof HipAttnError) throw e;
      throw new HipAttnError('TOKENIZER', `${this.name}: ${what} failed (${(e as Error).message})`, { cause: e });
    }
  }

  idToToken(id: number): string | undefined {
    return this.tok.id_to_token(id);
  }

  tokenToId(token: string): number | undefined {
    return this.tok.token_to_id(token);
  }

  isSpecial(id: number): boolean {
    return this.special.has(id);
  }
}

/**
 * Incremental detokenizer for streaming: feed ids one at a time and get the text they add, never
 * half a UTF-8 character (a token that ends mid-character shows nothing until the character is
 * complete). It decodes a small sliding window of ids (the previous emitted tokens and the new
 * ones), so it is correct for byte-level BPE and for SentencePiece's leading-space rule alike.
 */
export class StreamDecoder {
  private readonly ids: number[];
  private prefixOffset: number;
  private readOffset: number;

  /**
   * @param context ids already in the sequence (e.g. the end of the prompt); they are not
   * emitted, but they make the first new token decode as it would mid-text.
   */
  constructor(
    private readonly tokenizer: TextTokenizer,
    context: readonly number[] = [],
    private readonly options: DecodeOptions = { skipSpecialTokens: true },
  ) {
    this.ids = context.slice(-6);
    this.prefixOffset = 0;
    this.readOffset = this.ids.length;
  }

  /** Adds one token; returns the text it completes (possibly ''). */
  push(id: number): string {
    this.ids.push(id);
    const prefix = this.tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset), this.options);
    const text = this.tokenizer.decode(this.ids.slice(this.prefixOffset), this.options);
    if (text.length > prefix.length && !text.endsWith('\uFFFD')) {
      const delta = text.slice(prefix.length);
      this.prefixOffset = this.readOffset;
      this.readOffset = this.ids.length;
      this.trim();
      return delta;
    }
    return '';
  }

  /** The text still held back (an incomplete character at the end of the stream is emitted as U+FFFD). */
  flush(): string {
    const prefix = this.tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset), this.options);
    const text = this.tokenizer.decode(this.ids.slice(this.prefixOffset), this.options);
    this.prefixOffset = this.readOffset = this.ids.length;
    return text.startsWith(prefix) ? text.slice(prefix.length) : text;
  }

  /** Drops ids that no longer affect the window. */
  private trim(): void {
    if (this.prefixOffset > 64) {
      this.ids.splice(0, this.prefixOffset);
      this.readOffset -= this.prefixOffset;
      this.prefixOffset = 0;
    }
  }
}
