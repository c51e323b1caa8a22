/**
 * Test helpers for GPU tests (Node and browser).
 *
 * `getTestGpu()` acquires a WebGPU context for a test file. When no adapter is found it prints
 * a loud notice and returns null, so the file's GPU tests are skipped with
 * `describe.skipIf(!gpu)` — except when HIPATTN_REQUIRE_WEBGPU=1 (as `.ci/run` sets), where a
 * missing adapter throws and fails the run. CI can therefore never pass without running them.
 *
 *     const gpu = await getTestGpu();
 *     describe.skipIf(!gpu)('my kernel', () => { it('…', async () => { … gpu!.device … }); });
 *     afterAll(() => gpu?.destroy());
 */

import { acquireGpu, summaryLine, type AcquireGpuOptions, type GpuContext } from '../src/gpu/index.js';
import { Rng } from '../src/util/rng.js';

/** True when HIPATTN_REQUIRE_WEBGPU=1: a missing adapter or browser fails instead of skipping. */
export function webgpuRequired(): boolean {
  const v = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.HIPATTN_REQUIRE_WEBGPU;
  return v === '1' || v === 'true';
}

/** Prints a notice nobody can miss in the test log. */
export function loudNotice(lines: string[]): void {
  const width = Math.max(...lines.map((l) => l.length)) + 4;
  const bar = '!'.repeat(width);
  const body = lines.map((l) => `! ${l.padEnd(width - 4)} !`).join('\n');
  console.warn(`\n${bar}\n${body}\n${bar}\n`);
}

/**
 * A GPU context for tests, or null (with a loud notice) when there is no adapter.
 * @throws when HIPATTN_REQUIRE_WEBGPU=1 and no adapter is found.
 */
export async function getTestGpu(options: AcquireGpuOptions = {}): Promise<GpuContext | null> {
  let ctx: GpuContext | null = null;
  let why = '';
  try {
    ctx = await acquireGpu({ ...options, ifUnavailable: 'null' });
    if (!ctx) why = 'acquireGpu() found no WebGPU adapter';
  } catch (e) {
    why = e instanceof Error ? e.message : String(e);
  }
  if (ctx) {
    if (!(globalThis as { __hipattnGpuLogged?: boolean }).__hipattnGpuLogged) {
      (globalThis as { __hipattnGpuLogged?: boolean }).__hipattnGpuLogged = true;
      const f = ctx.features;
      console.log(
        `[hipattn test] WebGPU adapter ${summaryLine(ctx.adapterInfo)}: shaderF16=${f.shaderF16} ` +
          `subgroups=${f.subgroups} subgroupMatrix=${f.subgroupMatrix} timestampQuery=${f.timestampQuery}`,
      );
    }
    return ctx;
  }
  if (webgpuRequired()) {
    throw new Error(`HIPATTN_REQUIRE_WEBGPU=1 but no WebGPU adapter is available: ${why}`);
  }
  loudNotice([
    'NO WEBGPU ADAPTER: GPU TESTS IN THIS FILE ARE SKIPPED.',
    why,
    'Install a Vulkan driver (Debian: mesa-vulkan-drivers from bookworm-backports),',
    'or run .ci/run. Set HIPATTN_REQUIRE_WEBGPU=1 to make this a failure.',
  ]);
  return null;
}

/** Seed for a test: HIPATTN_SEED when set, else random; always logged so a failure can be replayed. */
export function testSeed(name: string): number {
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.HIPATTN_SEED;
  const seed = env !== undefined && env !== '' ? Number(env) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
  console.log(`[hipattn test] ${name}: seed ${seed} (replay with HIPATTN_SEED=${seed})`);
  return seed;
}

/** Uniform floats in [0, 1) from the project's seeded PRNG (src/util/rng.ts). */
export function seededRandom(seed: number): () => number {
  const rng = new Rng(seed);
  return () => rng.nextFloat();
}

/** n uniform floats in [lo, hi) from a seeded generator. */
export function randomFloat32(rand: () => number, n: number, lo = -1, hi = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * rand();
  return out;
}

/** Largest |a-b| / max(|b|, floor) over the arrays. */
export function maxRelError(a: ArrayLike<number>, b: ArrayLike<number>, floor = 1e-6): number {
  if (a.length !== b.length) throw new Error(`length mismatch: ${a.length} vs ${b.length}`);
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const e = Math.abs(a[i]! - b[i]!) / Math.max(Math.abs(b[i]!), floor);
    if (!(e <= worst)) worst = e; // NaN propagates
  }
  return worst;
}
