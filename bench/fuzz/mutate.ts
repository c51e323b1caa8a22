/**
 * Mutations for loader fuzzing: bytes (flips, overwrites, truncations), binary length fields
 * set to extremes, and JSON values replaced by numbers at the edges, wrong types or deletions.
 * Everything draws from the seeded Rng it is given, so a case is reproduced from (seed, index).
 */
import type { Rng } from '../../src/util/rng.js';

/** Numbers at the edges: zero, negatives, fractions, 2^32 - 1, 2^53, overflowing floats. */
export const EXTREME_NUMBERS: readonly number[] = [0, -1, 1, 2, 0.5, -0.5, 3.5, 7, 1e9, 0xffffffff, 2 ** 31, 2 ** 53, 2 ** 64, 1e308, -1e308, Number.MIN_VALUE];

/** Marker replaced by a literal 1e999 (which JSON.parse reads as Infinity) after serialising. */
const INFINITY_MARKER = '"__fuzz_infinity__"';

export function pick<T>(rng: Rng, list: readonly T[]): T {
  return list[rng.int(list.length)]!;
}

/** A replacement JSON value: an extreme number, a scaled original, a wrong type, or Infinity. */
export function jsonValue(rng: Rng, original: unknown): unknown {
  switch (rng.int(6)) {
    case 0:
    case 1:
      return pick(rng, EXTREME_NUMBERS);
    case 2:
      return typeof original === 'number' ? pick(rng, [original + 1, original - 1, original * 2, Math.floor(original / 2), -original, original + 0.5]) : pick(rng, EXTREME_NUMBERS);
    case 3:
      return pick<unknown>(rng, [null, true, false, '', 'abc', '1', [], {}, [1, 2], [[]], { a: 1 }]);
    case 4:
      return INFINITY_MARKER.slice(1, -1);
    default:
      return Array.isArray(original) ? original.map((x) => (rng.int(2) ? jsonValue(rng, x) : x)) : pick(rng, EXTREME_NUMBERS);
  }
}

/** JSON text of a value, with the Infinity marker turned into 1e999. */
export function stringify(value: unknown): string {
  return JSON.stringify(value).replaceAll(INFINITY_MARKER, '1e999');
}

/** Every (container, key) in a JSON tree up to `maxDepth`, skipping the keys in `skip`. */
export function jsonSlots(root: unknown, maxDepth: number, skip: ReadonlySet<string> = new Set()): [Record<string, unknown> | unknown[], string | number][] {
  const out: [Record<string, unknown> | unknown[], string | number][] = [];
  const walk = (node: unknown, depth: number): void => {
    if (depth > maxDepth || typeof node !== 'object' || node === null) return;
    if (Array.isArray(node)) {
      node.forEach((x, i) => {
        out.push([node, i]);
        walk(x, depth + 1);
      });
      return;
    }
    for (const [k, v] of Object.entries(node as Record<string, unknown>)) {
      if (skip.has(k)) continue;
      out.push([node as Record<string, unknown>, k]);
      walk(v, depth + 1);
    }
  };
  walk(root, 0);
  return out;
}

/** Mutates 1 to 3 slots of a JSON tree in place (replace, delete, or duplicate into a new key). Returns a description. */
export function mutateJson(rng: Rng, slots: readonly [Record<string, unknown> | unknown[], string | number][]): string {
  const done: string[] = [];
  const n = 1 + rng.int(3);
  for (let i = 0; i < n && slots.length > 0; i++) {
    const [container, key] = pick(rng, slots);
    const action = rng.int(8);
    if (action === 0 && !Array.isArray(container)) {
      delete container[key as string];
      done.push(`delete ${String(key)}`);
    } else {
      const v = jsonValue(rng, (container as Record<string, unknown>)[key as string]);
      (container as Record<string, unknown>)[key as string] = v;
      done.push(`${String(key)}=${stringify(v).slice(0, 40)}`);
    }
  }
  return done.join(', ');
}

/** Byte-level mutations of a copy of `bytes` within [from, to): flips, random bytes, runs of 0x00 / 0xFF, insertion of a digit. */
export function mutateBytes(rng: Rng, bytes: Uint8Array, from = 0, to = bytes.length): { bytes: Uint8Array; what: string } {
  const out = bytes.slice();
  const n = 1 + rng.int(4);
  const what: string[] = [];
  for (let i = 0; i < n; i++) {
    const at = from + rng.int(Math.max(1, to - from));
    if (at >= out.length) continue;
    switch (rng.int(4)) {
      case 0:
        out[at]! ^= 1 << rng.int(8);
        what.push(`flip@${at}`);
        break;
      case 1:
        out[at] = rng.int(256);
        what.push(`byte@${at}`);
        break;
      case 2: {
        const len = 1 + rng.int(8);
        out.fill(rng.int(2) ? 0xff : 0x00, at, Math.min(out.length, at + len));
        what.push(`run${len}@${at}`);
        break;
      }
      default:
        out[at] = 0x30 + rng.int(10); // a digit: turns numbers in JSON text into other numbers
        what.push(`digit@${at}`);
    }
  }
  return { bytes: out, what: what.join(' ') };
}

/** A length a file is cut to: anywhere, or near the interesting boundary `near`. */
export function truncatedLength(rng: Rng, size: number, near: number): number {
  return rng.int(2) ? rng.int(size) : Math.max(0, Math.min(size - 1, near + rng.int(64) - 32));
}

/** Values to write into a binary length / count field of `bits` bits. */
export function extremeField(rng: Rng, original: bigint, bits: 32 | 64): bigint {
  const max = bits === 32 ? 0xffffffffn : 0xffffffffffffffffn;
  const choices = [0n, 1n, original + 1n, original - 1n, original * 2n, original * 1000n, 0x7fffffffn, 0xffffffffn, 2n ** 53n, max, original / 2n];
  const v = pick(rng, choices);
  return v < 0n ? 0n : v > max ? max : v;
}
