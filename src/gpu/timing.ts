/**
 * Timing GPU work: timestamp queries around compute passes where the device has
 * 'timestamp-query' (and the context did not disable it), else wall-clock time from submit to
 * `queue.onSubmittedWorkDone()`.
 */

import { HipAttnError } from '../errors.js';
import { BufferUsage, MapMode } from './buffers.js';
import type { GpuContext } from './device.js';

export type TimingSource = 'timestamp' | 'wall-clock';

export interface PassTiming {
  label: string;
  ms: number;
}

export interface GpuTiming {
  /**
   * Milliseconds. With timestamps: from the start of the first timed pass to the end of the
   * last. With wall-clock: from submit to `onSubmittedWorkDone()` (includes submission and
   * scheduling overhead, so it is an upper bound).
   */
  ms: number;
  source: TimingSource;
  /** Per pass, with timestamps only (empty with wall-clock). */
  passes: PassTiming[];
}

/** Given to the encode callback: begins compute passes that the timer measures. */
export interface TimedEncoder {
  readonly encoder: GPUCommandEncoder;
  /** Begins a compute pass with timestamp writes attached (when timestamps are in use). */
  beginComputePass(label?: string): GPUComputePassEncoder;
}

export interface GpuTimerOptions {
  /** Most timed passes per `time()` call; default 64. */
  maxPasses?: number;
  /** 'auto' (default): timestamps when the context has them. 'wall-clock': never. */
  mode?: 'auto' | 'wall-clock';
}

/**
 * Reusable timer for one context (owns a query set and two small buffers; call `destroy()`).
 *
 *     const timer = new GpuTimer(ctx);
 *     const t = await timer.time((enc) => {
 *       const pass = enc.beginComputePass('saxpy');
 *       pass.setPipeline(p); pass.setBindGroup(0, bg); pass.dispatchWorkgroups(n / 64);
 *       pass.end();
 *     });
 *     console.log(t.ms, t.source);
 */
export class GpuTimer {
  readonly ctx: GpuContext;
  readonly source: TimingSource;
  private readonly maxPasses: number;
  private querySet: GPUQuerySet | null = null;
  private resolveBuffer: GPUBuffer | null = null;
  private readBuffer: GPUBuffer | null = null;
  private busy = false;

  constructor(ctx: GpuContext, options: GpuTimerOptions = {}) {
    this.ctx = ctx;
    this.maxPasses = options.maxPasses ?? 64;
    this.source = options.mode !== 'wall-clock' && ctx.features.timestampQuery ? 'timestamp' : 'wall-clock';
    if (this.source === 'timestamp') {
      const count = this.maxPasses * 2;
      this.querySet = ctx.device.createQuerySet({ label: 'hipattn timer', type: 'timestamp', count });
      this.resolveBuffer = ctx.device.createBuffer({
        label: 'hipattn timer resolve',
        size: count * 8,
        usage: BufferUsage.QUERY_RESOLVE | BufferUsage.COPY_SRC,
      });
      this.readBuffer = ctx.device.createBuffer({
        label: 'hipattn timer read',
        size: count * 8,
        usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST,
      });
    }
  }

  /**
   * Encodes work with `encode` (one command encoder, submitted once) and times it. The
   * callback may record any commands; only passes begun through `TimedEncoder.beginComputePass`
   * are measured by timestamps. Work submitted earlier is waited for first.
   */
  async time(encode: (enc: TimedEncoder) => void): Promise<GpuTiming> {
    if (this.busy) throw new HipAttnError('GPU', 'GpuTimer.time() called again before the previous call finished');
    this.busy = true;
    try {
      return await this.timeOnce(encode);
    } finally {
      this.busy = false;
    }
  }

  private async timeOnce(encode: (enc: TimedEncoder) => void): Promise<GpuTiming> {
    const device = this.ctx.device;
    const encoder = device.createCommandEncoder({ label: 'timed' });
    const labels: string[] = [];
    const querySet = this.querySet;
    const maxPasses = this.maxPasses;
    const timed: TimedEncoder = {
      encoder,
      beginComputePass(label?: string) {
        const name = label ?? `pass ${labels.length}`;
        if (!querySet) return encoder.beginComputePass({ label: name });
        if (labels.length >= maxPasses) {
          throw new HipAttnError('INVALID_OPTION', `GpuTimer: more than ${maxPasses} timed passes; raise maxPasses`);
        }
        const i = labels.length;
        labels.push(name);
        return encoder.beginComputePass({
          label: name,
          timestampWrites: { querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 },
        });
      },
    };
    encode(timed);

    if (!querySet || labels.length === 0) {
      const commands = encoder.finish();
      await device.queue.onSubmittedWorkDone();
      const t0 = performance.now();
      device.queue.submit([commands]);
      await device.queue.onSubmittedWorkDone();
      return { ms: performance.now() - t0, source: 'wall-clock', passes: [] };
    }

    const n = labels.length * 2;
    encoder.resolveQuerySet(querySet, 0, n, this.resolveBuffer!, 0);
    encoder.copyBufferToBuffer(this.resolveBuffer!, 0, this.readBuffer!, 0, n * 8);
    device.queue.submit([encoder.finish()]);
    await this.readBuffer!.mapAsync(MapMode.READ, 0, n * 8);
    const ticks = new BigInt64Array(this.readBuffer!.getMappedRange(0, n * 8).slice(0));
    this.readBuffer!.unmap();
    const passes: PassTiming[] = labels.map((label, i) => ({
      label,
      ms: nsToMs(ticks[2 * i + 1]! - ticks[2 * i]!),
    }));
    const total = nsToMs(ticks[n - 1]! - ticks[0]!);
    return { ms: total, source: 'timestamp', passes };
  }

  destroy(): void {
    this.querySet?.destroy();
    this.resolveBuffer?.destroy();
    this.readBuffer?.destroy();
    this.querySet = this.resolveBuffer = this.readBuffer = null;
  }
}

function nsToMs(ns: bigint): number {
  // Timestamps are nanoseconds; a negative difference (some drivers reset counters across
  // passes) is reported as 0 rather than a nonsense negative time.
  const v = Number(ns) / 1e6;
  return v > 0 ? v : 0;
}

/**
 * One-shot timing: creates a timer, times `encode`, destroys the timer. For repeated timing,
 * keep a `GpuTimer`.
 */
export async function timeGpu(ctx: GpuContext, encode: (enc: TimedEncoder) => void, options: GpuTimerOptions = {}): Promise<GpuTiming> {
  const timer = new GpuTimer(ctx, options);
  try {
    return await timer.time(encode);
  } finally {
    timer.destroy();
  }
}
