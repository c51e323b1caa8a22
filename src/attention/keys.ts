/**
 * Which keys a query attends, per method — the single definition used by every CPU method,
 * by the mask inspection API, and as the reference the GPU kernels are tested against.
 *
 * All functions write key positions in ascending order into `out` and return how many they
 * wrote; `out` must hold at least `position + 1` entries. Every key appears at most once and
 * never after `position` (causal).
 */

/** Dense causal attention: keys 0 … position. */
export function denseKeys(position: number, out: Int32Array): number {
  for (let t = 0; t <= position; t++) out[t] = t;
  return position + 1;
}

/** First key of the sliding window of a query at `position`: (position − window, position]. */
export function windowStart(position: number, slidingWindow: number): number {
  return Math.max(0, position - slidingWindow + 1);
}

/** StreamingLLM: sink tokens [0, sinkTokens) ∪ window (position − slidingWindow, position]. */
export function streamingKeys(position: number, sinkTokens: number, slidingWindow: number, out: Int32Array): number {
  let n = 0;
  const sinkEnd = Math.min(sinkTokens, position + 1);
  for (let t = 0; t < sinkEnd; t++) out[n++] = t;
  for (let t = Math.max(sinkEnd, windowStart(position, slidingWindow)); t <= position; t++) out[n++] = t;
  return n;
}

/** Category of an attended key, for inspection and visualisation. */
export const enum KeyKind {
  Sink = 1,
  Selected = 2,
  Window = 3,
}

/**
 * HiP: sink ∪ selected key blocks ∪ window. `blockStarts[from … from+count)` are the selected
 * blocks' first positions in ascending order (−1 marks an unused slot; those come last).
 * A selected key that is also a sink or window key is attended once, as sink/window.
 * If `kinds` is given, the category of each written key is stored in it.
 */
export function hipKeys(
  position: number,
  sinkTokens: number,
  slidingWindow: number,
  blockSizeK: number,
  blockStarts: Int32Array,
  from: number,
  count: number,
  out: Int32Array,
  kinds?: Uint8Array,
): number {
  let n = 0;
  const sinkEnd = Math.min(sinkTokens, position + 1);
  for (let t = 0; t < sinkEnd; t++) {
    if (kinds) kinds[n] = KeyKind.Sink;
    out[n++] = t;
  }
  const winStart = Math.max(sinkEnd, windowStart(position, slidingWindow));
  let last = sinkEnd - 1; // guards against overlapping blocks (never produced by HiP, but cheap to enforce)
  for (let j = 0; j < count; j++) {
    const s = blockStarts[from + j]!;
    if (s < 0) break;
    const e = Math.min(s + blockSizeK, winStart);
    for (let t = Math.max(s, last + 1); t < e; t++) {
      if (kinds) kinds[n] = KeyKind.Selected;
      out[n++] = t;
      last = t;
    }
  }
  for (let t = winStart; t <= position; t++) {
    if (kinds) kinds[n] = KeyKind.Window;
    out[n++] = t;
  }
  return n;
}
