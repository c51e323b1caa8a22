/**
 * Split-K combine ("flash decoding", second kernel): merges the partial (m, l, acc) that each
 * split of the flash kernel wrote for a row into the normalised output:
 *   M = max_s m_s,  w_s = 2^(m_s − M) (0 where l_s = 0),  out = Σ w_s acc_s / Σ w_s l_s.
 * Same grid and tile mapping as the split kernel's (x = query tile, y = head or KV head, z =
 * batch), so the same per-dispatch uniforms and bindings work.
 */
import { AttnParams } from './keyset-wgsl.js';
import type { StorageType } from '../types.js';

export interface ReduceVariant {
  dtype: StorageType;
  headDim: number;
  rowsQ: number;
  rowsH: number;
}

export function reduceVariantName(v: ReduceVariant): string {
  return `attention/split-reduce-${v.dtype}-d${v.headDim}-r${v.rowsH}x${v.rowsQ}`;
}

export const REDUCE_WG = 64;

export function reduceWgsl(v: ReduceVariant): string {
  const { headDim: D, rowsQ: RQ, rowsH: RH, dtype: T } = v;
  const D4 = D / 4;
  const ROWS = RH * RQ;
  return /* wgsl */ `${T === 'f16' ? 'enable f16;\n' : ''}
${AttnParams.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(4) var<storage, read_write> O: array<vec4<${T}>>;
@group(0) @binding(6) var<storage, read_write> PART: array<vec4<f32>>;

@compute @workgroup_size(${REDUCE_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let tile = P.t0 + wid.x;
  let b = P.b0 + wid.z;
  let hD = ${RH === 1 ? 'P.h0' : 'P.h0 * P.group'};
  let hFirst = ${RH === 1 ? 'P.h0 + wid.y' : '(P.h0 + wid.y) * P.group'};
  let qb = tile / P.tilesPerQB;
  let qa = qb * P.bsq + (tile % P.tilesPerQB) * ${RQ}u;
  let qe = min(qa + ${RQ}u, min((qb + 1u) * P.bsq, P.qLen));
  for (var i = lid; i < ${ROWS * D4}u; i += ${REDUCE_WG}u) {
    let r = i / ${D4}u;
    let c4 = i % ${D4}u;
    let q = qa + r % ${RQ}u;
    if (q >= qe) { continue; }
    let head = hFirst + r / ${RQ}u;
    let row0 = ((b * P.heads + head) * P.qLen + q) * P.splits;
    var mx = -1.0e30;
    for (var s = 0u; s < P.splits; s++) {
      let ml = PART[row0 + s];
      if (ml.y > 0.0) { mx = max(mx, ml.x); }
    }
    var l = 0.0;
    var acc = vec4<f32>(0.0);
    for (var s = 0u; s < P.splits; s++) {
      let ml = PART[row0 + s];
      if (ml.y > 0.0) {
        let w = exp2(ml.x - mx);
        l += w * ml.y;
        acc += w * PART[P.partRows * P.splits + (row0 + s) * ${D4}u + c4];
      }
    }
    let val = select(vec4<f32>(0.0), acc / l, l > 0.0);
    O[P.oBase + (b - P.b0) * P.oSB + (head - hD) * P.oSH + (q - P.qD) * P.oST + c4] = vec4<${T}>(val);
  }
}
`;
}
