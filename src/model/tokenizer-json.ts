/**
 * Checks of a tokenizer.json done before @huggingface/tokenizers sees it, for what that library
 * trusts: it stores every token at `vocab[id]` in a plain array (an added token with id 10^9
 * makes an array of 10^9 holes that later loops walk for minutes), keeps whichever of two
 * tokens with one id comes last, and compiles the file's regular expressions as they are.
 *
 *  - Token ids (model vocabulary and added_tokens) are integers in [0, number of vocabulary
 *    entries + number of added tokens): the ids a tokenizer built from this file can have (or
 *    [0, idLimit) when the caller knows the vocabulary size, as for a GGUF token list).
 *  - No id belongs to two different tokens (within the vocabulary, within added_tokens, or an
 *    added token and a vocabulary token).
 *  - No pattern ({"Regex": ...} anywhere) can backtrack catastrophically (regex-safety.ts).
 */
import { HipAttnError } from '../errors.js';
import { showValue } from './config.js';
import { catastrophicBacktrackingReason } from './regex-safety.js';

function fail(file: string, msg: string): HipAttnError {
  return new HipAttnError('TOKENIZER', `${file}: ${msg}`);
}

/** Every {"Regex": string} in the tree, with its JSON path (depth-limited: tokenizer configs are shallow). */
function findRegexes(node: unknown, path: string, out: [string, string][], depth = 0): void {
  if (depth > 16 || typeof node !== 'object' || node === null) return;
  if (Array.isArray(node)) {
    node.forEach((x, i) => findRegexes(x, `${path}[${i}]`, out, depth + 1));
    return;
  }
  for (const [k, v] of Object.entries(node as Record<string, unknown>)) {
    if (k === 'vocab' || k === 'merges' || k === 'added_tokens') continue; // data, not configuration
    if (k === 'Regex' && typeof v === 'string') out.push([`${path}.Regex`, v]);
    else findRegexes(v, `${path}.${k}`, out, depth + 1);
  }
}

/** Throws TOKENIZER naming the file, the token(s) or the pattern when `json` breaks a rule above. */
export function checkTokenizerJson(json: Record<string, unknown>, file: string, idLimit?: number): void {
  const model = json.model;
  if (typeof model !== 'object' || model === null || Array.isArray(model)) throw fail(file, '"model" is missing or not an object');
  const vocab = (model as Record<string, unknown>).vocab;
  const added = json.added_tokens ?? [];
  if (!Array.isArray(added)) throw fail(file, '"added_tokens" is not a list');
  // Unigram vocabularies are lists (the id is the position); BPE, WordPiece and WordLevel map token → id.
  const entries: [string, unknown][] = Array.isArray(vocab)
    ? vocab.map((e, i) => [Array.isArray(e) && typeof e[0] === 'string' ? e[0] : `#${i}`, i])
    : typeof vocab === 'object' && vocab !== null
      ? Object.entries(vocab as Record<string, unknown>)
      : [];
  if (vocab !== undefined && !Array.isArray(vocab) && (typeof vocab !== 'object' || vocab === null)) throw fail(file, '"model.vocab" is not an object or a list');
  const limit = idLimit ?? entries.length + added.length;
  const byId = new Map<number, string>();
  const checkId = (id: unknown, token: string, where: string): number => {
    if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0 || id >= limit) {
      throw fail(file, `${where} token ${showValue(token)} has id ${showValue(id)}; ids must be integers in [0, ${limit}) (${idLimit === undefined ? `the ${entries.length} vocabulary entries and ${added.length} added tokens` : 'the vocabulary size'})`);
    }
    return id;
  };
  for (const [token, id] of entries) {
    const n = checkId(id, token, 'vocabulary');
    const other = byId.get(n);
    if (other !== undefined) throw fail(file, `tokens ${showValue(other)} and ${showValue(token)} both have id ${n} in the vocabulary`);
    byId.set(n, token);
  }
  const addedById = new Map<number, string>();
  added.forEach((t: unknown, i) => {
    if (typeof t !== 'object' || t === null) throw fail(file, `added_tokens[${i}] is not an object`);
    const { id, content } = t as Record<string, unknown>;
    if (typeof content !== 'string' || content.length === 0) throw fail(file, `added_tokens[${i}] has no "content" string`);
    const n = checkId(id, content, `added_tokens[${i}]`);
    const prev = addedById.get(n);
    if (prev !== undefined && prev !== content) throw fail(file, `added tokens ${showValue(prev)} and ${showValue(content)} both have id ${n}`);
    addedById.set(n, content);
    const inVocab = byId.get(n);
    // Added tokens usually repeat a vocabulary entry (same id, same text) or extend the vocabulary.
    if (inVocab !== undefined && inVocab !== content && !Array.isArray(vocab)) {
      throw fail(file, `added token ${showValue(content)} has id ${n}, which the vocabulary gives to ${showValue(inVocab)}`);
    }
  });
  const patterns: [string, string][] = [];
  findRegexes(json, '', patterns);
  for (const [path, pattern] of patterns) {
    const why = catastrophicBacktrackingReason(pattern);
    if (why) throw fail(file, `pattern ${path.slice(1)} ${showValue(pattern)} can take exponential time on some inputs (${why}); refused`);
  }
}
