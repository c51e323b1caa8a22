/**
 * Where the binary fields of a (well-formed) GGUF header are, so that the fuzzer can set a
 * count, length, type or value to an extreme rather than only flipping random bits. An
 * independent little walker over the format (magic, version, counts, key/values, tensor infos).
 */

export type GgufFieldKind = 'count' | 'key-length' | 'value-type' | 'array-count' | 'string-length' | 'tensor-field' | 'scalar';

export interface GgufField {
  at: number;
  bits: 32 | 64;
  kind: GgufFieldKind;
  /** For scalars: the GGUF value type (4 UINT32, 5 INT32, 6 FLOAT32, 10 UINT64, 12 FLOAT64, ...). */
  type?: number;
  label: string;
}

const SCALAR_SIZE: Readonly<Record<number, number>> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

/** Fields of the header of `bytes`, and the offset where the tensor infos end. */
export function ggufFields(bytes: Uint8Array): { fields: GgufField[]; headerEnd: number } {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const fields: GgufField[] = [];
  let pos = 8;
  const u64 = (kind: GgufFieldKind, label: string): number => {
    fields.push({ at: pos, bits: 64, kind, label });
    const v = Number(dv.getBigUint64(pos, true));
    pos += 8;
    return v;
  };
  const u32 = (kind: GgufFieldKind, label: string): number => {
    fields.push({ at: pos, bits: 32, kind, label });
    const v = dv.getUint32(pos, true);
    pos += 4;
    return v;
  };
  const str = (kind: GgufFieldKind, label: string): string => {
    const len = u64(kind, label);
    const s = new TextDecoder().decode(bytes.subarray(pos, pos + len));
    pos += len;
    return s;
  };
  const value = (type: number, label: string): void => {
    if (type === 8) {
      str('string-length', label);
    } else if (type === 9) {
      const elem = u32('value-type', `${label} element type`);
      const n = u64('array-count', `${label} length`);
      for (let i = 0; i < n; i++) value(elem, `${label}[${i}]`);
    } else {
      const size = SCALAR_SIZE[type]!;
      if (size >= 4) fields.push({ at: pos, bits: size === 8 ? 64 : 32, kind: 'scalar', type, label });
      pos += size;
    }
  };
  const tensors = u64('count', 'tensor count');
  const kvs = u64('count', 'metadata count');
  for (let i = 0; i < kvs; i++) {
    const key = str('key-length', `key ${i}`);
    const type = u32('value-type', `type of ${key}`);
    value(type, key);
  }
  for (let i = 0; i < tensors; i++) {
    const name = str('tensor-field', `tensor ${i} name`);
    const dims = u32('tensor-field', `${name} dimension count`);
    for (let d = 0; d < dims; d++) u64('tensor-field', `${name} ne[${d}]`);
    u32('tensor-field', `${name} type`);
    u64('tensor-field', `${name} offset`);
  }
  return { fields, headerEnd: pos };
}
