/**
 * Float32 building blocks of the CPU forward pass. Activations are row-major [tokens, features];
 * linear weights are row-major [out, in] as Hugging Face stores them. JavaScript arithmetic is
 * float64, so sums are accumulated in float64 and rounded to float32 when stored.
 */

/**
 * out[t, o] = Σ_k x[t, k] · w[o, k] (+ bias[o]) for t < tokens, o < outDim.
 *
 * Loop order: a tile of 4 weight rows stays in L1 while a sweep over the tokens (4 at a time)
 * reads the activations, so each weight is read from memory once per call and each inner step
 * does 16 multiply-adds for 8 loads. Decoding (tokens = 1) degenerates to a streaming mat-vec.
 */
export function matmul(
  x: Float32Array,
  w: Float32Array,
  tokens: number,
  inDim: number,
  outDim: number,
  bias?: Float32Array,
  out: Float32Array = new Float32Array(tokens * outDim),
): Float32Array {
  const K = inDim;
  let o = 0;
  for (; o + 4 <= outDim; o += 4) {
    const w0 = o * K, w1 = w0 + K, w2 = w1 + K, w3 = w2 + K;
    const b0 = bias ? bias[o]! : 0, b1 = bias ? bias[o + 1]! : 0, b2 = bias ? bias[o + 2]! : 0, b3 = bias ? bias[o + 3]! : 0;
    let t = 0;
    for (; t + 4 <= tokens; t += 4) {
      const x0 = t * K, x1 = x0 + K, x2 = x1 + K, x3 = x2 + K;
      let a00 = 0, a01 = 0, a02 = 0, a03 = 0;
      let a10 = 0, a11 = 0, a12 = 0, a13 = 0;
      let a20 = 0, a21 = 0, a22 = 0, a23 = 0;
      let a30 = 0, a31 = 0, a32 = 0, a33 = 0;
      for (let k = 0; k < K; k++) {
        const v0 = w[w0 + k]!, v1 = w[w1 + k]!, v2 = w[w2 + k]!, v3 = w[w3 + k]!;
        const u0 = x[x0 + k]!, u1 = x[x1 + k]!, u2 = x[x2 + k]!, u3 = x[x3 + k]!;
        a00 += u0 * v0; a01 += u0 * v1; a02 += u0 * v2; a03 += u0 * v3;
        a10 += u1 * v0; a11 += u1 * v1; a12 += u1 * v2; a13 += u1 * v3;
        a20 += u2 * v0; a21 += u2 * v1; a22 += u2 * v2; a23 += u2 * v3;
        a30 += u3 * v0; a31 += u3 * v1; a32 += u3 * v2; a33 += u3 * v3;
      }
      let r = t * outDim + o;
      out[r] = a00 + b0; out[r + 1] = a01 + b1; out[r + 2] = a02 + b2; out[r + 3] = a03 + b3;
      r += outDim;
      out[r] = a10 + b0; out[r + 1] = a11 + b1; out[r + 2] = a12 + b2; out[r + 3] = a13 + b3;
      r += outDim;
      out[r] = a20 + b0; out[r + 1] = a21 + b1; out[r + 2] = a22 + b2; out[r + 3] = a23 + b3;
      r += outDim;
      out[r] = a30 + b0; out[r + 1] = a31 + b1; out[r + 2] = a32 + b2; out[r + 3] = a33 + b3;
    }
    for (; t < tokens; t++) {
      const x0 = t * K;
      let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      for (let k = 0; k < K; k++) {
        const u = x[x0 + k]!;
        a0 += u * w[w0 + k]!; a1 += u * w[w1 + k]!; a2 += u * w[w2 + k]!; a3 += u * w[w3 + k]!;
      }
      const r = t * outDim + o;
      out[r] = a0 + b0; out[r + 1] = a1 + b1; out[r + 2] = a2 + b2; out[r + 3] = a3 + b3;
    }
  }
  for (; o < outDim; o++) {
    const w0 = o * K;
    const b0 = bias ? bias[o]! : 0;
    for (let t = 0; t < tokens; t++) {
      const x0 = t * K;
      let a = 0;
      for (let k = 0; k < K; k++) a += x[x0 + k]! * w[w0 + k]!;
      out[t * outDim + o] = a + b0;
    }
  }
  return out;
}

/** RMSNorm of each row: out = x / sqrt(mean(x²) + eps) · weight (float32 as in transformers). */
export function rmsNorm(
  x: Float32Array,
  weight: Float32Array,
  tokens: number,
  dim: number,
  eps: number,
  out: Float32Array = new Float32Array(tokens * dim),
): Float32Array {
  for (let t = 0; t < tokens; t++) {
    const base = t * dim;
    let ss = 0;
    for (let i = 0; i < dim; i++) {
      const v = x[base + i]!;
      ss += v * v;
    }
    const inv = Math.fround(1 / Math.sqrt(Math.fround(ss / dim) + eps));
    for (let i = 0; i < dim; i++) out[base + i] = weight[i]! * Math.fround(x[base + i]! * inv);
  }
  return out;
}

/** SwiGLU gate, in place: gate[i] = silu(gate[i]) · up[i], silu(g) = g / (1 + e^−g). */
export function siluMul(gate: Float32Array, up: Float32Array): Float32Array {
  for (let i = 0; i < gate.length; i++) {
    const g = gate[i]!;
    gate[i] = Math.fround(g / (1 + Math.exp(-g))) * up[i]!;
  }
  return gate;
}

/** In place: a[i] += b[i]. */
export function addInPlace(a: Float32Array, b: Float32Array): Float32Array {
  for (let i = 0; i < a.length; i++) a[i] = a[i]! + b[i]!;
  return a;
}

/** log-softmax of one row of logits, in float64 (for scoring). */
export function logSoftmax(logits: Float32Array, offset = 0, length = logits.length - offset): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < length; i++) max = Math.max(max, logits[offset + i]!);
  let sum = 0;
  for (let i = 0; i < length; i++) sum += Math.exp(logits[offset + i]! - max);
  const lse = max + Math.log(sum);
  const out = new Float64Array(length);
  for (let i = 0; i < length; i++) out[i] = logits[offset + i]! - lse;
  return out;
}

/** Index of the largest value (the first one on ties). */
export function argmax(values: ArrayLike<number>, offset = 0, length = values.length - offset): number {
  let best = 0;
  let bestV = -Infinity;
  for (let i = 0; i < length; i++) {
    const v = values[offset + i]!;
    if (v > bestV) {
      bestV = v;
      best = i;
    }
  }
  return best;
}
