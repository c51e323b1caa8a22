/**
 * The tokenizer embedded in a GGUF file's metadata:
 *  - tokenizer.ggml.model = "llama": SentencePiece BPE with byte fallback (spm-tokenizer.ts);
 *  - tokenizer.ggml.model = "gpt2": byte-level BPE (Llama 3, Qwen2, SmolLM GGUFs), rebuilt as a
 *    Hugging Face tokenizer.json from tokens + merges and the pre-tokenizer named by
 *    tokenizer.ggml.pre, then run by @huggingface/tokenizers.
 */
import { HipAttnError } from '../errors.js';
import type { GgufFile, GgufValue } from './gguf.js';
import { SpmTokenizer, SpmTokenType } from './spm-tokenizer.js';
import { HfTokenizer, type TextTokenizer, type TokenizerRecipe } from './tokenizer.js';

function strings(g: GgufFile, key: string): string[] | undefined {
  const v = g.metadata.get(key);
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new HipAttnError('MODEL_FORMAT', `${g.source.name}: metadata "${key}" is not a list of strings`);
  return v as string[];
}
function numbers(g: GgufFile, key: string): number[] | undefined {
  const v = g.metadata.get(key);
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'number')) throw new HipAttnError('MODEL_FORMAT', `${g.source.name}: metadata "${key}" is not a list of numbers`);
  return v as number[];
}
function optId(v: GgufValue | undefined, n: number): number | undefined {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v < n ? v : undefined;
}
function optBool(v: GgufValue | undefined): boolean | undefined {
  return typeof v === 'boolean' ? v : undefined;
}

/**
 * Pre-tokenizer split patterns of byte-level BPE vocabularies, by tokenizer.ggml.pre
 * (the same patterns as the models' tokenizer.json files and llama.cpp).
 */
const PRE_TOKENIZER_PATTERNS: Readonly<Record<string, string>> = {
  // Llama 3 / 3.1 / 3.2
  'llama-bpe': "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  // Qwen2 / 2.5
  qwen2: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};

/** Builds a tokenizer.json object for a GGUF byte-level BPE ("gpt2") vocabulary. */
export function gpt2TokenizerJson(g: GgufFile, tokens: string[], types: number[]): Record<string, unknown> {
  const merges = strings(g, 'tokenizer.ggml.merges');
  if (!merges) throw new HipAttnError('MODEL_FORMAT', `${g.source.name}: byte-level BPE tokenizer without tokenizer.ggml.merges`);
  const pre = g.metadata.get('tokenizer.ggml.pre') ?? 'default';
  let preTokenizer: Record<string, unknown>;
  if (pre === 'default' || pre === 'gpt-2' || pre === 'gpt2') {
    preTokenizer = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  } else if (pre === 'smollm') {
    preTokenizer = {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Digits', individual_digits: true },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
      ],
    };
  } else if (typeof pre === 'string' && pre in PRE_TOKENIZER_PATTERNS) {
    preTokenizer = {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: PRE_TOKENIZER_PATTERNS[pre] }, behavior: 'Isolated', invert: false },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    };
  } else {
    throw new HipAttnError('UNSUPPORTED', `${g.source.name}: byte-level BPE pre-tokenizer ${JSON.stringify(pre)} is not supported (supported: default, llama-bpe, qwen2, smollm)`);
  }
  const vocab: Record<string, number> = {};
  tokens.forEach((t, i) => {
    vocab[t] = i;
  });
  const added = tokens
    .map((content, id) => ({ content, id, type: types[id] }))
    .filter((t) => t.type === SpmTokenType.CONTROL || t.type === SpmTokenType.USER_DEFINED)
    .map((t) => ({ id: t.id, content: t.content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: t.type === SpmTokenType.CONTROL }));
  return {
    version: '1.0',
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: preTokenizer,
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: pre === 'llama-bpe', vocab, merges },
  };
}

/** A byte-level BPE GGUF tokenizer: BOS added by default only when add_bos_token says so. */
export class GgufBpeTokenizer extends HfTokenizer {
  override readonly recipe: TokenizerRecipe;
  constructor(
    init: ConstructorParameters<typeof HfTokenizer>[0],
    private readonly addBosDefault: boolean,
  ) {
    super(init);
    this.recipe = { kind: 'hf', init, addBosDefault };
  }
  override encode(text: string, options: { addBos?: boolean } = {}): number[] {
    return super.encode(text, { addBos: options.addBos ?? (this.addBosDefault && this.bosTokenId !== undefined) });
  }
}

/** The tokenizer stored in a GGUF file. */
export function ggufTokenizer(g: GgufFile): TextTokenizer {
  const file = g.source.name;
  const model = g.metadata.get('tokenizer.ggml.model');
  const tokens = strings(g, 'tokenizer.ggml.tokens');
  if (!tokens) throw new HipAttnError('MODEL_FORMAT', `${file}: no embedded tokenizer (tokenizer.ggml.tokens is missing)`);
  const n = tokens.length;
  const types = numbers(g, 'tokenizer.ggml.token_type') ?? new Array<number>(n).fill(SpmTokenType.NORMAL);
  if (types.length !== n) throw new HipAttnError('MODEL_FORMAT', `${file}: ${n} tokens but ${types.length} token types`);
  const bos = optId(g.metadata.get('tokenizer.ggml.bos_token_id'), n);
  const eos = optId(g.metadata.get('tokenizer.ggml.eos_token_id'), n);
  const eot = optId(g.metadata.get('tokenizer.ggml.eot_token_id'), n);
  const eosIds = [...new Set([eos, eot].filter((x): x is number => x !== undefined))];
  const chatTemplate = g.metadata.get('tokenizer.chat_template');
  const template = typeof chatTemplate === 'string' ? chatTemplate : undefined;
  if (model === 'llama') {
    const scores = numbers(g, 'tokenizer.ggml.scores');
    if (!scores) throw new HipAttnError('MODEL_FORMAT', `${file}: SentencePiece tokenizer without tokenizer.ggml.scores`);
    return new SpmTokenizer({
      tokens,
      scores,
      types,
      bosTokenId: bos,
      eosTokenIds: eosIds,
      unkTokenId: optId(g.metadata.get('tokenizer.ggml.unknown_token_id'), n),
      addBos: optBool(g.metadata.get('tokenizer.ggml.add_bos_token')) ?? true,
      addEos: optBool(g.metadata.get('tokenizer.ggml.add_eos_token')) ?? false,
      addSpacePrefix: optBool(g.metadata.get('tokenizer.ggml.add_space_prefix')) ?? true,
      ...(template !== undefined ? { chatTemplate: template } : {}),
      name: file,
    });
  }
  if (model === 'gpt2') {
    const specialTokens: Record<string, string> = {};
    if (bos !== undefined) specialTokens.bos_token = tokens[bos]!;
    if (eos !== undefined) specialTokens.eos_token = tokens[eos]!;
    return new GgufBpeTokenizer(
      {
        tokenizerJson: gpt2TokenizerJson(g, tokens, types),
        tokenizerConfig: specialTokens,
        ...(template !== undefined ? { chatTemplate: template } : {}),
        ...(bos !== undefined ? { bosTokenId: bos } : {}),
        eosTokenIds: eosIds,
        name: file,
        idLimit: n,
      },
      optBool(g.metadata.get('tokenizer.ggml.add_bos_token')) ?? false,
    );
  }
  throw new HipAttnError('UNSUPPORTED', `${file}: tokenizer model ${JSON.stringify(model)} is not supported (supported: llama (SentencePiece), gpt2 (byte-level BPE))`);
}
