/**
 * Child process of adapter-probe.ts: requests a WebGPU adapter through Dawn and prints
 * `{"adapter": GpuAdapterSummary | null}` on stdout. Dawn's own stderr output stays in this
 * process's stderr, which the parent does not show.
 */
import { DEFAULT_DAWN_TOGGLES, summarizeAdapterInfo } from '../gpu/device.js';

async function probe(): Promise<void> {
  let adapter: GPUAdapter | null = null;
  try {
    const specifier = 'webgpu';
    const { create } = (await import(specifier)) as { create: (toggles: string[]) => GPU };
    adapter = await create([...DEFAULT_DAWN_TOGGLES]).requestAdapter();
  } catch {
    adapter = null; // no Dawn for this platform, or no Vulkan: no adapter
  }
  process.stdout.write(JSON.stringify({ adapter: adapter ? summarizeAdapterInfo(adapter.info) : null }));
  // dawn.node can keep the event loop alive; the answer is out, so leave now
  process.exit(0);
}

await probe();
