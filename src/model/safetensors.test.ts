/**
 * safetensors reader and dtype conversions: round trips against brute-force references, and
 * malformed files (written to the OS temp directory) that must give MODEL_FORMAT errors naming
 * the file and the tensor — never a crash or a hang.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { HipAttnError } from '../errors.js';
import { type ByteSource, bufferSource } from './byte-source.js';
import { bf16ToF32, f16BitsToNumber, f16ToF32, f32ToF16Bits } from './dtypes.js';
import { fileSource, nodeDirectory } from './node-files.js';
import { SafetensorsFile, ShardedSafetensors, openSafetensorsDir, writeSafetensors } from './safetensors.js';
import { Rng } from './sampling.js';

const seed = Number(process.env.HIPATTN_SEED ?? Math.floor(Math.random() * 2 ** 31));
console.log(`safetensors.test seed ${seed} (set HIPATTN_SEED to reproduce)`);
const rng = new Rng(seed);
const dir = mkdtempSync(join(tmpdir(), 'hipattn-st-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function randn(n: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (rng.nextFloat() * 2 - 1) * scale * 2 ** Math.floor(rng.nextFloat() * 8 - 4);
  return out;
}

/** Brute-force bf16: the f32's top 16 bits, read through a DataView. */
function bf16Reference(bits: number): number {
  const dv = new DataView(new ArrayBuffer(4));
  dv.setUint32(0, bits << 16, true);
  return dv.getFloat32(0, true);
}

function u16Bytes(a: Uint16Array): Uint8Array {
  return new Uint8Array(a.buffer.slice(0));
}

/** Writes bytes to a temp file and returns its path. */
function tmpFile(name: string, bytes: Uint8Array): string {
  const p = join(dir, name);
  writeFileSync(p, bytes);
  return p;
}

/** Builds a raw safetensors file from a header object and data size (for malformed cases). */
function rawFile(header: unknown, dataBytes: number, headerLenOverride?: number): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLenOverride ?? json.length), true);
  out.set(json, 8);
  return out;
}

async function expectFormatError(p: Promise<unknown>, ...mustMention: string[]): Promise<HipAttnError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e, 'expected a HipAttnError').toBeInstanceOf(HipAttnError);
  const err = e as HipAttnError;
  expect(err.code).toBe('MODEL_FORMAT');
  for (const m of mustMention) expect(err.message).toContain(m);
  return err;
}

describe('dtype conversions', () => {
  it('every f16 bit pattern converts exactly (vs the IEEE formula), and f32→f16 inverts it', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const f = f16ToF32(all);
    const bad: string[] = [];
    for (let h = 0; h < 65536; h++) {
      const exp = (h >>> 10) & 31;
      const frac = h & 1023;
      const sign = h & 0x8000 ? -1 : 1;
      const ref = exp === 0 ? sign * frac * 2 ** -24 : exp === 31 ? (frac ? NaN : sign * Infinity) : sign * 2 ** (exp - 15) * (1 + frac / 1024);
      if (Number.isNaN(ref)) {
        if (!Number.isNaN(f[h]) || (f32ToF16Bits(f[h]!) & 0x7c00) !== 0x7c00) bad.push(`NaN ${h}`);
        continue;
      }
      if (!Object.is(f[h], ref)) bad.push(`f16ToF32(${h}) = ${f[h]} ≠ ${ref}`);
      if (f32ToF16Bits(ref) !== h) bad.push(`f32ToF16Bits(${ref}) = ${f32ToF16Bits(ref)} ≠ ${h}`);
    }
    expect(bad).toEqual([]);
  });

  it('f32→f16 rounds to nearest, ties to even, overflows to Inf (brute force over neighbours)', () => {
    const finite: number[] = [];
    for (let h = 0; h < 0x7c00; h++) finite.push(f16BitsToNumber(h)); // 0 … 65504, ascending
    for (let trial = 0; trial < 20000; trial++) {
      const x = Math.fround((rng.nextFloat() * 2 - 1) * 2 ** (rng.nextFloat() * 40 - 26));
      const ax = Math.abs(x);
      // reference: nearest finite half by search, ties → even mantissa; beyond 65520 → Inf
      let ref: number;
      if (ax >= 65520) ref = 0x7c00;
      else {
        let lo = 0;
        let hi = finite.length - 1;
        while (hi - lo > 1) {
          const mid = (lo + hi) >> 1;
          if (finite[mid]! <= ax) lo = mid;
          else hi = mid;
        }
        const dl = ax - finite[lo]!;
        const dh = finite[hi]! - ax;
        ref = dl < dh ? lo : dh < dl ? hi : lo % 2 === 0 ? lo : hi;
      }
      if (x < 0) ref |= 0x8000;
      const got = f32ToF16Bits(x);
      if (got !== ref && !(ax === 0)) expect({ x, got, ref }).toEqual({ x, got: ref, ref });
    }
  });

  it('bf16 → f32 equals the top-half reference for random bit patterns', () => {
    const bits = new Uint16Array(10000).map(() => rng.nextU32() & 0xffff);
    const f = bf16ToF32(bits);
    bits.forEach((b, i) => {
      const ref = bf16Reference(b);
      if (Number.isNaN(ref)) expect(Number.isNaN(f[i])).toBe(true);
      else expect(f[i]).toBe(ref);
    });
  });
});

describe('safetensors reading', () => {
  it('round-trips F32, F16 and BF16 tensors (values and shapes), from a file and from memory', async () => {
    const a = randn(6 * 5);
    const h = new Uint16Array(7 * 3).map(() => f32ToF16Bits((rng.nextFloat() - 0.5) * 100));
    const b = new Uint16Array(4 * 4).map(() => (rng.nextU32() & 0x7f7f) | 0x3f00);
    const bytes = writeSafetensors(
      [
        { name: 'a', dtype: 'F32', shape: [6, 5], data: new Uint8Array(a.buffer.slice(0)) },
        { name: 'h', dtype: 'F16', shape: [7, 3], data: u16Bytes(h) },
        { name: 'b', dtype: 'BF16', shape: [4, 4], data: u16Bytes(b) },
      ],
      { format: 'pt' },
    );
    const p = tmpFile('ok.safetensors', bytes);
    for (const src of [await fileSource(p), bufferSource('mem', bytes), bufferSource('mem-unaligned', bytes.slice())]) {
      const st = await SafetensorsFile.open(src);
      expect(st.metadata).toEqual({ format: 'pt' });
      expect(st.names().sort()).toEqual(['a', 'b', 'h']);
      expect(st.info('h')!.shape).toEqual([7, 3]);
      expect(await st.readF32('a')).toEqual(a);
      expect(Array.from(await st.readF32('h'))).toEqual(Array.from(h).map(f16BitsToNumber));
      expect(Array.from(await st.readF32('b'))).toEqual(Array.from(b).map(bf16Reference));
      expect(Array.from(await st.readF16Bits('h'))).toEqual(Array.from(h));
      // F32 → f16 bits rounds each value
      expect(Array.from(await st.readF16Bits('a'))).toEqual(Array.from(a).map(f32ToF16Bits));
      await st.close();
    }
  });

  it('reads lazily: opening touches only the header, reading one tensor only its bytes', async () => {
    const big = randn(64 * 1024);
    const bytes = writeSafetensors([
      { name: 'small', dtype: 'F32', shape: [4], data: new Uint8Array(new Float32Array([1, 2, 3, 4]).buffer) },
      { name: 'big', dtype: 'F32', shape: [64, 1024], data: new Uint8Array(big.buffer.slice(0)) },
    ]);
    const inner = bufferSource('counted', bytes);
    let bytesRead = 0;
    const counted: ByteSource = { ...inner, read: (o, n) => ((bytesRead += n), inner.read(o, n)) };
    const st = await SafetensorsFile.open(counted);
    expect(bytesRead).toBeLessThan(400);
    bytesRead = 0;
    expect(Array.from(await st.readF32('small'))).toEqual([1, 2, 3, 4]);
    expect(bytesRead).toBe(16);
  });

  describe('malformed files → MODEL_FORMAT naming file and tensor', () => {
    const good = writeSafetensors([
      { name: 'w', dtype: 'F32', shape: [8, 8], data: new Uint8Array(256) },
      { name: 'v', dtype: 'BF16', shape: [8], data: new Uint8Array(16) },
    ]);
    const open = async (name: string, bytes: Uint8Array) => {
      const src = await fileSource(tmpFile(name, bytes));
      return SafetensorsFile.open(src).catch(async (e: unknown) => {
        await src.close();
        throw e;
      });
    };

    it('file shorter than the 8-byte length', async () => {
      await expectFormatError(open('tiny.safetensors', new Uint8Array(5)), 'tiny.safetensors', 'too small');
    });
    it('header length beyond the file', async () => {
      const b = good.slice();
      new DataView(b.buffer).setBigUint64(0, BigInt(b.length), true);
      await expectFormatError(open('hdrlen.safetensors', b), 'hdrlen.safetensors', 'beyond the end');
    });
    it('absurd header length (u64 max)', async () => {
      const b = good.slice();
      new DataView(b.buffer).setBigUint64(0, 0xffffffffffffffffn, true);
      await expectFormatError(open('hdrmax.safetensors', b), 'hdrmax.safetensors', 'header length');
    });
    it('truncated data section (every cut point of the data)', async () => {
      const headerEnd = 8 + Number(new DataView(good.buffer).getBigUint64(0, true));
      for (const cut of [headerEnd, headerEnd + 1, headerEnd + 100, good.length - 1]) {
        await expectFormatError(open(`trunc${cut}.safetensors`, good.subarray(0, cut)), `trunc${cut}.safetensors`, 'tensor "');
      }
      for (const cut of [9, 20, headerEnd - 1]) {
        await expectFormatError(open(`trunchdr${cut}.safetensors`, good.subarray(0, cut)), `trunchdr${cut}.safetensors`);
      }
    });
    it('header that is not JSON / not an object', async () => {
      const bad = new TextEncoder().encode('{"w": {"dtype": "F32", ');
      const b = new Uint8Array(8 + bad.length);
      new DataView(b.buffer).setBigUint64(0, BigInt(bad.length), true);
      b.set(bad, 8);
      await expectFormatError(open('json.safetensors', b), 'json.safetensors', 'not valid JSON');
      await expectFormatError(open('arr.safetensors', rawFile([1, 2], 0)), 'arr.safetensors', 'not a JSON object');
    });
    it('offsets outside the data section', async () => {
      const b = rawFile({ w: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, x: { dtype: 'F32', shape: [4], data_offsets: [16, 32] } }, 20);
      await expectFormatError(open('offs.safetensors', b), 'offs.safetensors', 'tensor "x"', 'outside the data section');
      const c = rawFile({ w: { dtype: 'F32', shape: [4], data_offsets: [16, 0] } }, 32);
      await expectFormatError(open('offs2.safetensors', c), 'offs2.safetensors', 'tensor "w"', 'data_offsets');
      const d = rawFile({ w: { dtype: 'F32', shape: [4], data_offsets: [-4, 12] } }, 32);
      await expectFormatError(open('offs3.safetensors', d), 'offs3.safetensors', 'tensor "w"');
    });
    it('unknown dtype', async () => {
      const b = rawFile({ w: { dtype: 'F12', shape: [4], data_offsets: [0, 6] } }, 6);
      await expectFormatError(open('dtype.safetensors', b), 'dtype.safetensors', 'tensor "w"', 'unknown dtype "F12"');
    });
    it('shape / byte size mismatch', async () => {
      const b = rawFile({ w: { dtype: 'BF16', shape: [3, 5], data_offsets: [0, 32] } }, 32);
      await expectFormatError(open('size.safetensors', b), 'size.safetensors', 'tensor "w"', 'needs 30');
      const c = rawFile({ w: { dtype: 'F32', shape: [2, -2], data_offsets: [0, 16] } }, 16);
      await expectFormatError(open('shape.safetensors', c), 'shape.safetensors', 'tensor "w"', 'shape');
    });
    it('overlapping tensors', async () => {
      const b = rawFile({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, b: { dtype: 'F32', shape: [4], data_offsets: [8, 24] } }, 24);
      await expectFormatError(open('overlap.safetensors', b), 'overlap.safetensors', 'overlap');
    });
    it('reading a tensor that is not there', async () => {
      const st = await open('ok2.safetensors', good);
      await expectFormatError(st.readF32('nope'), 'ok2.safetensors', 'tensor "nope"');
      await st.close();
    });
    it('a valid but non-float dtype is refused when read as weights (UNSUPPORTED)', async () => {
      const b = writeSafetensors([{ name: 'i', dtype: 'I32', shape: [2], data: new Uint8Array(8) }]);
      const st = await open('int.safetensors', b);
      await expect(st.readF32('i')).rejects.toMatchObject({ code: 'UNSUPPORTED', message: expect.stringContaining('tensor "i"') });
      await st.close();
    });
  });

  describe('sharded checkpoints', () => {
    const t = (name: string, vals: number[]) => ({ name, dtype: 'F32', shape: [vals.length], data: new Uint8Array(new Float32Array(vals).buffer) });
    function makeShards(sub: string, index: unknown, shards: Record<string, Uint8Array>): string {
      const root = join(dir, sub);
      mkdirSync(root, { recursive: true });
      writeFileSync(join(root, 'model.safetensors.index.json'), JSON.stringify(index));
      for (const [n, b] of Object.entries(shards)) writeFileSync(join(root, n), b);
      return root;
    }
    const shardA = writeSafetensors([t('x', [1, 2]), t('y', [3])]);
    const shardB = writeSafetensors([t('z', [4, 5, 6])]);

    it('reads tensors across shards through the index', async () => {
      const root = makeShards('s1', { metadata: {}, weight_map: { x: 'a.safetensors', y: 'a.safetensors', z: 'b.safetensors' } }, { 'a.safetensors': shardA, 'b.safetensors': shardB });
      const st = await openSafetensorsDir(nodeDirectory(root));
      expect(st.names().sort()).toEqual(['x', 'y', 'z']);
      expect(Array.from(await st.readF32('z'))).toEqual([4, 5, 6]);
      expect(Array.from(await st.readF32('x'))).toEqual([1, 2]);
      expect(st.info('z')!.file).toContain('b.safetensors');
      await st.close();
    });
    it('a missing shard, a tensor not in its shard, a bad index → MODEL_FORMAT naming them', async () => {
      const r1 = makeShards('s2', { weight_map: { x: 'a.safetensors', z: 'missing.safetensors' } }, { 'a.safetensors': shardA });
      await expectFormatError(ShardedSafetensors.open(nodeDirectory(r1)), 'missing.safetensors', 'tensor "z"');
      const r2 = makeShards('s3', { weight_map: { x: 'a.safetensors', w: 'a.safetensors' } }, { 'a.safetensors': shardA });
      await expectFormatError(ShardedSafetensors.open(nodeDirectory(r2)), 'a.safetensors', 'tensor "w"');
      const r3 = makeShards('s4', { weight_map: { x: '../a.safetensors' } }, {});
      await expectFormatError(ShardedSafetensors.open(nodeDirectory(r3)), 'model.safetensors.index.json', 'tensor "x"');
      const r4 = makeShards('s5', { nothing: 1 }, {});
      await expectFormatError(ShardedSafetensors.open(nodeDirectory(r4)), 'weight_map');
      const r5 = makeShards('s6', { weight_map: { x: 'a.safetensors', z: 'b.safetensors' } }, { 'a.safetensors': shardA, 'b.safetensors': shardB.subarray(0, shardB.length - 3) });
      await expectFormatError(ShardedSafetensors.open(nodeDirectory(r5)), 'b.safetensors', 'tensor "z"');
    });
  });
});
