/**
 * A static check for regular expressions that can backtrack catastrophically (exponential time in
 * the input length) in a backtracking engine such as JavaScript's. tokenizer.json files carry
 * their own pre-tokenizer and normalizer patterns, which @huggingface/tokenizers compiles into
 * plain `RegExp`s; a synchronous regex cannot be interrupted, and a length bound does not help
 * (`(a+)+$` takes minutes on 30 characters), so such patterns are refused when the tokenizer is
 * built instead.
 *
 * Refused: a group repeated more than once (`*`, `+`, `{n,}`, `{n,m}` with m > 1) that contains
 * another repetition (`(a+)+`, `(\s*x)*`: nested quantifiers) or an alternation (`(a|ab)+`:
 * overlapping alternatives). The pre-tokenizer patterns of real models (GPT-2, Llama 3, Qwen2,
 * o200k, DeepSeek) have neither: their only quantified groups are optional (`(?i:'s|'t)?`).
 * Not detected (polynomial, not exponential, so long inputs are slow but finish): adjacent
 * overlapping repetitions such as `\s*\s*$`, and backreferences.
 */

interface Group {
  /** Some atom inside it is repeated more than once (directly or in a nested group). */
  hasRepeat: boolean;
  /** It has a top-level `|`, or a nested group that does. */
  hasAlternation: boolean;
}

/** Parses a quantifier at `i`; returns its length and whether it allows more than one repetition, or undefined if none. */
function quantifierAt(p: string, i: number): { length: number; repeats: boolean } | undefined {
  const c = p[i];
  let length: number;
  let repeats: boolean;
  if (c === '*' || c === '+') {
    length = 1;
    repeats = true;
  } else if (c === '?') {
    length = 1;
    repeats = false;
  } else if (c === '{') {
    const m = /^\{(\d*)(,(\d*))?\}/.exec(p.slice(i, i + 24));
    if (!m || (m[1] === '' && m[3] === undefined)) return undefined; // a literal "{"
    length = m[0].length;
    const max = m[2] === undefined ? Number(m[1]) : m[3] === '' ? Infinity : Number(m[3]);
    repeats = max > 1;
  } else {
    return undefined;
  }
  if (p[i + length] === '?' || p[i + length] === '+') length++; // lazy / possessive
  return { length, repeats };
}

/** Why `pattern` may backtrack catastrophically, or undefined when it passes the check above. */
export function catastrophicBacktrackingReason(pattern: string): string | undefined {
  const stack: Group[] = [{ hasRepeat: false, hasAlternation: false }];
  let i = 0;
  while (i < pattern.length) {
    const c = pattern[i]!;
    let atom: Group | undefined; // the group just closed, if the atom is a group
    if (c === '\\') {
      // An escape: \p{...}, \u{...} and \x.. take their braces along.
      i += 2;
      if (pattern[i - 1] !== undefined && 'pPuk'.includes(pattern[i - 1]!) && pattern[i] === '{') {
        const close = pattern.indexOf('}', i);
        i = close < 0 ? pattern.length : close + 1;
      }
    } else if (c === '[') {
      // A character class: skip to its unescaped closing bracket.
      i++;
      if (pattern[i] === '^') i++;
      if (pattern[i] === ']') i++;
      while (i < pattern.length && pattern[i] !== ']') i += pattern[i] === '\\' ? 2 : 1;
      i++;
    } else if (c === '(') {
      stack.push({ hasRepeat: false, hasAlternation: false });
      i++;
      continue;
    } else if (c === ')') {
      if (stack.length === 1) return undefined; // unbalanced: RegExp itself will refuse it
      atom = stack.pop()!;
      const parent = stack[stack.length - 1]!;
      parent.hasRepeat ||= atom.hasRepeat;
      parent.hasAlternation ||= atom.hasAlternation;
      i++;
    } else if (c === '|') {
      stack[stack.length - 1]!.hasAlternation = true;
      i++;
      continue;
    } else {
      i++;
    }
    const q = quantifierAt(pattern, i);
    if (!q) continue;
    const at = i;
    i += q.length;
    if (!q.repeats) continue;
    if (atom?.hasRepeat) return `a repeated group contains another repetition (nested quantifiers, before offset ${at})`;
    if (atom?.hasAlternation) return `a repeated group contains alternatives (before offset ${at})`;
    stack[stack.length - 1]!.hasRepeat = true;
  }
  return undefined;
}
