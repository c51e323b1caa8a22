/**
 * The SentencePiece-BPE tokenizer of GGUF files with tokenizer.ggml.model = "llama" (Llama 1/2,
 * Mistral v0.1, TinyLlama, llama2.c models), rebuilt from the embedded vocabulary: tokens,
 * scores and token types. It follows llama.cpp's tokenizer, which defines the format:
 *
 *  1. Special tokens (control tokens when parseSpecial, user-defined tokens always) are cut out
 *     of the text and emitted as their ids.
 *  2. Each remaining text fragment gets a leading space when it starts the text or follows a
 *     special token (tokenizer.ggml.add_space_prefix, default true); spaces become "▁".
 *  3. The fragment is split into Unicode characters; then, repeatedly, the adjacent pair whose
 *     concatenation is a vocabulary token with the highest score is merged (ties: leftmost).
 *  4. A final piece that is not in the vocabulary (a character never seen in training) becomes
 *     its UTF-8 bytes as <0xXX> tokens (byte fallback), or <unk> without byte tokens.
 *
 * Decoding maps "▁" back to spaces and byte tokens to bytes, then reads the bytes as UTF-8;
 * like SentencePiece, a leading space of the first piece is dropped.
 */
import { HipAttnError } from '../errors.js';
import type { DecodeOptions, EncodeOptions, TextTokenizer, TokenizerRecipe } from './tokenizer.js';

/** llama.cpp token types (tokenizer.ggml.token_type). */
export enum SpmTokenType {
  UNDEFINED = 0,
  NORMAL = 1,
  UNKNOWN = 2,
  CONTROL = 3,
  USER_DEFINED = 4,
  UNUSED = 5,
  BYTE = 6,
}

export interface SpmVocab {
  tokens: string[];
  scores: number[];
  types: number[];
  bosTokenId?: number;
  eosTokenIds?: number[];
  unkTokenId?: number;
  /** Prepend BOS by default (tokenizer.ggml.add_bos_token, default true). */
  addBos?: boolean;
  /** Append EOS by default (tokenizer.ggml.add_eos_token, default false). */
  addEos?: boolean;
  /** tokenizer.ggml.add_space_prefix (default true). */
  addSpacePrefix?: boolean;
  chatTemplate?: string;
  /** Name for error messages. */
  name?: string;
}

const SPACE = '\u2581'; // ▁

/** Max-heap of candidate merges ordered by score, then by left position. */
class BigramHeap {
  private readonly items: { left: number; right: number; score: number; size: number }[] = [];
  get length(): number {
    return this.items.length;
  }
  private before(a: { score: number; left: number }, b: { score: number; left: number }): boolean {
    return a.score > b.score || (a.score === b.score && a.left < b.left);
  }
  push(item: { left: number; right: number; score: number; size: number }): void {
    const a = this.items;
    a.push(item);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.before(a[i]!, a[p]!)) break;
      [a[i], a[p]] = [a[p]!, a[i]!];
      i = p;
    }
  }
  pop(): { left: number; right: number; score: number; size: number } {
    const a = this.items;
    const top = a[0]!;
    const last = a.pop()!;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && this.before(a[l]!, a[m]!)) m = l;
        if (r < a.length && this.before(a[r]!, a[m]!)) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m]!, a[i]!];
        i = m;
      }
    }
    return top;
  }
}

export class SpmTokenizer implements TextTokenizer {
  readonly recipe: TokenizerRecipe;
  readonly vocabSize: number;
  readonly bosTokenId: number | undefined;
  readonly eosTokenIds: readonly number[];
  readonly specialTokens: Readonly<Record<string, string>>;
  readonly chatTemplate: string | undefined;
  private readonly tokens: string[];
  private readonly scores: number[];
  private readonly types: number[];
  private readonly toId = new Map<string, number>();
  private readonly byteIds: (number | undefined)[] = new Array(256);
  private readonly unkId: number | undefined;
  private readonly addBos: boolean;
  private readonly addEos: boolean;
  private readonly addSpacePrefix: boolean;
  /** Special strings cut out of the text, by first UTF-16 unit, longest first: [text, id, isControl]. */
  private readonly specials = new Map<string, [string, number, boolean][]>();
  private readonly name: string;

  constructor(v: SpmVocab) {
    this.recipe = { kind: 'spm', vocab: v };
    this.name = v.name ?? 'GGUF tokenizer';
    const n = v.tokens.length;
    if (n === 0 || v.scores.length !== n || v.types.length !== n) {
      throw new HipAttnError('TOKENIZER', `${this.name}: ${n} tokens, ${v.scores.length} scores and ${v.types.length} token types must be equal and non-zero`);
    }
    this.tokens = v.tokens;
    this.scores = v.scores;
    this.types = v.types;
    this.vocabSize = n;
    // As in llama.cpp, a later duplicate of a token text wins.
    for (let i = 0; i < n; i++) this.toId.set(v.tokens[i]!, i);
    for (let i = 0; i < n; i++) {
      if (v.types[i] !== SpmTokenType.BYTE) continue;
      const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(v.tokens[i]!);
      if (m) this.byteIds[parseInt(m[1]!, 16)] = i;
    }
    const check = (id: number | undefined, what: string): number | undefined => {
      if (id === undefined) return undefined;
      if (!Number.isInteger(id) || id < 0 || id >= n) throw new HipAttnError('TOKENIZER', `${this.name}: ${what} id ${id} is outside the vocabulary of ${n}`);
      return id;
    };
    this.bosTokenId = check(v.bosTokenId, 'BOS');
    this.eosTokenIds = (v.eosTokenIds ?? []).map((id) => check(id, 'EOS')!);
    this.unkId = check(v.unkTokenId, 'UNK') ?? v.types.findIndex((t) => t === SpmTokenType.UNKNOWN);
    if (this.unkId === -1) this.unkId = undefined;
    this.addBos = v.addBos ?? true;
    this.addEos = v.addEos ?? false;
    this.addSpacePrefix = v.addSpacePrefix ?? true;
    this.chatTemplate = v.chatTemplate;
    const specialTokens: Record<string, string> = {};
    if (this.bosTokenId !== undefined) specialTokens.bos_token = v.tokens[this.bosTokenId]!;
    if (this.eosTokenIds.length > 0) specialTokens.eos_token = v.tokens[this.eosTokenIds[0]!]!;
    if (this.unkId !== undefined) specialTokens.unk_token = v.tokens[this.unkId]!;
    this.specialTokens = specialTokens;
    for (let i = 0; i < n; i++) {
      const t = v.types[i];
      const s = v.tokens[i]!;
      if ((t === SpmTokenType.CONTROL || t === SpmTokenType.USER_DEFINED) && s.length > 0) {
        const list = this.specials.get(s[0]!) ?? [];
        list.push([s, i, t === SpmTokenType.CONTROL]);
        this.specials.set(s[0]!, list);
      }
    }
    for (const list of this.specials.values()) list.sort((a, b) => b[0].length - a[0].length);
  }

  /**
   * Encodes text. Control-token strings such as "<s>" in the text become their ids (as a chat
   * template needs); pass `parseSpecial: false` to treat them as plain text.
   */
  encode(text: string, options: EncodeOptions & { parseSpecial?: boolean } = {}): number[] {
    const out: number[] = [];
    const addBos = options.addBos ?? this.addBos;
    if (addBos) {
      if (this.bosTokenId === undefined) throw new HipAttnError('TOKENIZER', `${this.name}: addBos requested but the model has no BOS token`);
      out.push(this.bosTokenId);
    }
    let prevSpecial = true;
    for (const frag of this.splitSpecial(text, options.parseSpecial ?? true)) {
      if (typeof frag === 'number') {
        out.push(frag);
        prevSpecial = true;
      } else {
        this.encodeFragment((this.addSpacePrefix && prevSpecial ? ' ' : '') + frag, out);
        prevSpecial = false;
      }
    }
    if (options.addBos === undefined && this.addEos && this.eosTokenIds.length > 0) out.push(this.eosTokenIds[0]!);
    return out;
  }

  /** Splits text into plain fragments and special-token ids. */
  private splitSpecial(text: string, parseControl: boolean): (string | number)[] {
    const parts: (string | number)[] = [];
    let start = 0;
    let i = 0;
    outer: while (i < text.length) {
      for (const [s, id, control] of this.specials.get(text[i]!) ?? []) {
        if ((parseControl || !control) && text.startsWith(s, i)) {
          if (i > start) parts.push(text.slice(start, i));
          parts.push(id);
          i += s.length;
          start = i;
          continue outer;
        }
      }
      i++;
    }
    if (start < text.length) parts.push(text.slice(start));
    return parts;
  }

  /** BPE by score over one plain-text fragment (see the file comment). */
  private encodeFragment(text: string, out: number[]): void {
    if (text.length === 0) return;
    const sym = Array.from(text.replaceAll(' ', SPACE)); // Unicode characters
    const n = sym.length;
    const prev = Array.from({ length: n }, (_, i) => i - 1);
    const next = Array.from({ length: n }, (_, i) => (i + 1 < n ? i + 1 : -1));
    const heap = new BigramHeap();
    const tryAdd = (left: number, right: number): void => {
      if (left < 0 || right < 0) return;
      const merged = sym[left]! + sym[right]!;
      const id = this.toId.get(merged);
      if (id === undefined) return;
      heap.push({ left, right, score: this.scores[id]!, size: merged.length });
    };
    for (let i = 1; i < n; i++) tryAdd(i - 1, i);
    while (heap.length > 0) {
      const b = heap.pop();
      const l = sym[b.left]!;
      const r = sym[b.right]!;
      // Stale entry: one side was merged since this pair was queued.
      if (l.length === 0 || r.length === 0 || l.length + r.length !== b.size || next[b.left] !== b.right) continue;
      sym[b.left] = l + r;
      sym[b.right] = '';
      const after = next[b.right]!;
      next[b.left] = after;
      if (after >= 0) prev[after] = b.left;
      tryAdd(prev[b.left]!, b.left);
      tryAdd(b.left, after);
    }
    for (let i = 0; i !== -1; i = next[i]!) {
      const piece = sym[i]!;
      const id = this.toId.get(piece);
      if (id !== undefined) {
        out.push(id);
        continue;
      }
      for (const byte of new TextEncoder().encode(piece)) {
        const bid = this.byteIds[byte] ?? this.unkId;
        if (bid === undefined) throw new HipAttnError('TOKENIZER', `${this.name}: character ${JSON.stringify(piece)} is not in the vocabulary and there are no byte or unknown tokens`);
        out.push(bid);
      }
    }
  }

  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    const bytes: number[] = [];
    const enc = new TextEncoder();
    let first = true;
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) throw new HipAttnError('TOKENIZER', `${this.name}: token id ${id} is outside the vocabulary of ${this.vocabSize}`);
      const type = this.types[id];
      const text = this.tokens[id]!;
      let piece: Uint8Array | number[];
      if (type === SpmTokenType.BYTE) {
        piece = [parseInt(text.slice(3, 5), 16)];
      } else if (type === SpmTokenType.CONTROL || type === SpmTokenType.UNKNOWN || type === SpmTokenType.UNUSED) {
        if (options.skipSpecialTokens) continue;
        piece = enc.encode(text);
      } else {
        let s = text.replaceAll(SPACE, ' ');
        if (first && this.addSpacePrefix && s.startsWith(' ')) s = s.slice(1);
        piece = enc.encode(s);
      }
      first = false;
      for (const b of piece) bytes.push(b);
    }
    return new TextDecoder('utf-8', { fatal: false }).decode(new Uint8Array(bytes));
  }

  idToToken(id: number): string | undefined {
    return this.tokens[id];
  }

  tokenToId(token: string): number | undefined {
    return this.toId.get(token);
  }

  isSpecial(id: number): boolean {
    const t = this.types[id];
    return t === SpmTokenType.CONTROL || t === SpmTokenType.UNKNOWN || t === SpmTokenType.UNUSED;
  }
}
