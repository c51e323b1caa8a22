/**
 * HiP sparse attention on the CPU (HIP.md, "Sparse attention"): every query attends, with
 * exact softmax, to sink ∪ its query block's selected key blocks ∪ its sliding window.
 */
import { ShapeError } from '../../errors.js';
import { hipKeys } from '../keys.js';
import { type HipMask, maskSlot } from '../mask.js';
import { type HipOptions } from '../options.js';
import { type AttentionInput, validateInput, type RunOptions } from '../shape.js';
import { attendKeySets } from './attend.js';
import { estimateHipMask } from './hip-mask.js';

/** Attention over the keys a (previously estimated) mask selects; output as float32. */
export function hipSparseAttention(input: AttentionInput, mask: HipMask, opts?: RunOptions): Float32Array {
  const s = validateInput(input, opts);
  const numQueryBlocks = Math.ceil(s.queryLength / mask.options.blockSizeQ);
  if (mask.batch !== s.batch || mask.heads !== s.heads || mask.numQueryBlocks !== numQueryBlocks) {
    throw new ShapeError(
      `mask is for batch ${mask.batch}, heads ${mask.heads}, ${mask.numQueryBlocks} query blocks; input has batch ${s.batch}, heads ${s.heads}, ${numQueryBlocks} query blocks`,
    );
  }
  const o = mask.options;
  return attendKeySets(
    input,
    s,
    (b, h, i, p, out) => hipKeys(p, o.sinkTokens, o.slidingWindow, o.blockSizeK, mask.blockStarts, maskSlot(mask, b, h, Math.floor(i / o.blockSizeQ)), mask.blocksPerQuery, out),
    'f32',
    opts?.onProgress,
  );
}

/** HiP attention: mask estimation followed by sparse attention. */
export function hipAttention(
  input: AttentionInput,
  options: Partial<HipOptions> = {},
  opts?: RunOptions,
): { output: Float32Array; mask: HipMask } {
  // progress: mask estimation is roughly the first half of the work, sparse attention the second
  const report = opts?.onProgress;
  const mask = estimateHipMask(input, options, { checkFinite: opts?.checkFinite, onProgress: report && ((f) => report(0.5 * f)) });
  const output = hipSparseAttention(input, mask, { checkFinite: false, onProgress: report && ((f) => report(0.5 + 0.5 * f)) });
  return { output, mask };
}
