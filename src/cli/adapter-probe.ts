/**
 * `--device auto` on the command line: which adapter would WebGPU give? Asked in a short child
 * process, because Dawn prints warnings of its own on stderr when it enumerates adapters (on
 * Mesa's lavapipe: "maxDynamicUniformBuffersPerPipelineLayout artificially reduced from
 * 1000000 to 16 …", twice) and native output cannot be filtered from JavaScript. When the
 * answer is a software adapter or none, the command runs on the CPU and Dawn never loads in
 * the command's own process; with a hardware adapter it loads as usual.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { type GpuAdapterSummary, isSoftwareAdapter } from '../gpu/device.js';

/** The child's script (adapter-probe-main.js, next to this module). */
const PROBE_SCRIPT = fileURLToPath(new URL('./adapter-probe-main.js', import.meta.url));

export interface ProbeResult {
  /** The adapter WebGPU offers, or null when there is none. */
  adapter: GpuAdapterSummary | null;
}

/** Asks a child process for the adapter; undefined when the probe itself failed (no answer within `timeoutMs`, a crash). */
export function probeAdapter(timeoutMs = 60_000): Promise<ProbeResult | undefined> {
  return new Promise((resolve) => {
    execFile(process.execPath, [PROBE_SCRIPT], { timeout: timeoutMs, maxBuffer: 1 << 20 }, (error, stdout) => {
      if (error) return resolve(undefined);
      try {
        resolve(JSON.parse(stdout) as ProbeResult);
      } catch {
        resolve(undefined);
      }
    });
  });
}

/**
 * The device to load on for `--device auto`: 'cpu' when the probe finds no adapter or a
 * software one, else 'auto' (loadModel then takes the hardware adapter, or falls back itself
 * if the probe could not answer).
 */
export async function resolveAutoDevice(probe: () => Promise<ProbeResult | undefined> = () => probeAdapter()): Promise<'cpu' | 'auto'> {
  const r = await probe();
  if (!r) return 'auto';
  return r.adapter === null || isSoftwareAdapter(r.adapter) ? 'cpu' : 'auto';
}
