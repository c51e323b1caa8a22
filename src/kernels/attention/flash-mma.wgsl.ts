/** Tensor-core (subgroup-matrix) prefill kernel — see below. */
import type { GpuContext } from '../../gpu/index.js';
import type { StorageType } from '../types.js';

export interface MmaVariant {
  dtype: 'f16';
  headDim: number;
  hip: boolean;
  emulate: boolean;
  m: number;
  sg: number;
  warps: number;
  bk: number;
}
export function mmaVariantName(v: MmaVariant): string {
  return `attention/flash-mma${v.emulate ? '-emulated' : ''}-d${v.headDim}-m${v.m}-w${v.warps}-k${v.bk}${v.hip ? '-hip' : ''}`;
}
export function mmaWorkgroupBytes(_v: MmaVariant): number {
  return 0;
}
export function mmaWgsl(_v: MmaVariant): string {
  return '';
}
export function pickMmaConfig(
  _gpu: GpuContext,
  _o: { dtype: StorageType; headDim: number; emulate: boolean; warps?: number; bk?: number },
): { ok: true; config: { m: number; sg: number; warps: number; bk: number } } | { ok: false; why: string } {
  return { ok: false, why: 'not implemented' };
}
