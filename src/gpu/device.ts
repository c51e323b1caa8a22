/**
 * WebGPU device acquisition and feature detection.
 *
 * One entry point, `acquireGpu`, for every place hipattn runs:
 * - Node: Dawn through the `webgpu` package (loaded with a dynamic import, so this module
 *   still bundles for the browser);
 * - the browser: `navigator.gpu`;
 * - an embedding application: a `GPUDevice` (or `GPUAdapter`, or `GPU`) it already has.
 *
 * The result, a `GpuContext`, carries the device, a plain-object summary of the adapter, the
 * four features kernels choose variants by, the device's limits, and a pipeline cache. There
 * is no module-level state: each call makes a new context, and several may coexist.
 */

import { HipAttnError } from '../errors.js';
import { PipelineCache } from './pipelines.js';

/** Feature names hipattn asks for when the adapter has them. */
export const FEATURE_SHADER_F16 = 'shader-f16';
export const FEATURE_SUBGROUPS = 'subgroups';
export const FEATURE_SUBGROUP_MATRIX = 'chromium-experimental-subgroup-matrix';
export const FEATURE_TIMESTAMP_QUERY = 'timestamp-query';

/**
 * Dawn toggles used in Node by default. `allow_unsafe_apis` exposes experimental features
 * (subgroup matrix) and unquantised timestamps; `vulkan_enable_f16_on_nvidia` is needed for
 * `shader-f16` on NVIDIA's Vulkan driver. Together they expose
 * `chromium-experimental-subgroup-matrix` (tensor cores) on NVIDIA.
 */
export const DEFAULT_DAWN_TOGGLES: readonly string[] = [
  'enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia',
];

/**
 * Limits raised to the adapter's maximum when the device is created (the WebGPU defaults are
 * far below what real adapters allow, e.g. 128 MiB storage bindings, 16 KiB workgroup memory).
 */
export const REQUESTED_MAX_LIMITS: readonly string[] = [
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxUniformBufferBindingSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupSizeZ',
  'maxComputeWorkgroupsPerDimension',
  'maxStorageBuffersPerShaderStage',
  'maxUniformBuffersPerShaderStage',
  'maxBindGroups',
  'maxBindingsPerBindGroup',
  'maxDynamicStorageBuffersPerPipelineLayout',
  'maxDynamicUniformBuffersPerPipelineLayout',
  'maxImmediateSize',
];

/** The features kernels pick variants by. */
export interface GpuFeatures {
  /** `shader-f16`: f16 arithmetic and f16 storage in WGSL (`enable f16;`). */
  shaderF16: boolean;
  /** `subgroups`: subgroupAdd/Max/Shuffle/… (`enable subgroups;`). */
  subgroups: boolean;
  /** `chromium-experimental-subgroup-matrix`: cooperative matrix ops (tensor cores). */
  subgroupMatrix: boolean;
  /** `timestamp-query`: GPU timestamps around passes. */
  timestampQuery: boolean;
}

/** One matrix shape the adapter supports for subgroup-matrix operations. */
export interface SubgroupMatrixConfig {
  componentType: string;
  resultComponentType: string;
  M: number;
  N: number;
  K: number;
}

/** A plain, JSON-able copy of `GPUAdapterInfo` (the real object's fields are getters). */
export interface GpuAdapterSummary {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** True for software adapters (lavapipe, SwiftShader) where the platform reports it. */
  isFallbackAdapter: boolean;
  /** Subgroup size range, when the platform reports it (0 when unknown). */
  subgroupMinSize: number;
  subgroupMaxSize: number;
  /** Shapes usable with subgroup matrices; empty without that feature. */
  subgroupMatrixConfigs: SubgroupMatrixConfig[];
}

/** A plain copy of the device's limits, by name (every numeric limit the device reports). */
export type GpuLimits = Record<string, number> & {
  maxStorageBufferBindingSize: number;
  maxBufferSize: number;
  minStorageBufferOffsetAlignment: number;
  minUniformBufferOffsetAlignment: number;
  maxUniformBufferBindingSize: number;
  maxComputeWorkgroupStorageSize: number;
  maxComputeInvocationsPerWorkgroup: number;
  maxComputeWorkgroupSizeX: number;
  maxComputeWorkgroupSizeY: number;
  maxComputeWorkgroupSizeZ: number;
  maxComputeWorkgroupsPerDimension: number;
  maxStorageBuffersPerShaderStage: number;
  maxBindGroups: number;
};

/** Where the device came from. */
export type GpuRuntime = 'node' | 'browser' | 'external';

export interface GpuContext {
  readonly device: GPUDevice;
  /** The adapter the device came from; null when the caller passed a bare device. */
  readonly adapter: GPUAdapter | null;
  readonly adapterInfo: GpuAdapterSummary;
  /**
   * Features kernels may use: present on the device AND not disabled by the caller's options.
   * Always read these, not `device.features` (a passed-in device may have features the caller
   * asked hipattn not to use).
   */
  readonly features: GpuFeatures;
  readonly limits: GpuLimits;
  readonly runtime: GpuRuntime;
  /** Compiled pipelines for this device, compiled once per (name, code, entry point). */
  readonly pipelines: PipelineCache;
  /** Resolves when the device is lost (including after `destroy()`). */
  readonly lost: Promise<GPUDeviceLostInfo>;
  /**
   * Destroys the device when this context created it (a device passed in by the caller is
   * left alone). Idempotent.
   */
  destroy(): void;
}

export interface AcquireGpuOptions {
  /** Use this device as is (no adapter request). Its features are masked by `disable`. */
  device?: GPUDevice;
  /** Request the device from this adapter. */
  adapter?: GPUAdapter;
  /** Request the adapter from this `GPU` object (e.g. `navigator.gpu`, or Dawn's `create()`). */
  gpu?: GPU;
  /**
   * Where to find a `GPU` when none is given: 'auto' (default) uses `navigator.gpu` when it
   * exists, else the `webgpu` package in Node.
   */
  backend?: 'auto' | 'browser' | 'node';
  /** Dawn instance toggles for Node (default `DEFAULT_DAWN_TOGGLES`). */
  dawnToggles?: readonly string[];
  powerPreference?: GPUPowerPreference;
  /** Ask for a fallback (software) adapter. */
  forceFallbackAdapter?: boolean;
  /**
   * Do not use these features even where the adapter has them (to exercise fallback paths,
   * or to avoid a broken driver path). When hipattn creates the device, disabled features
   * are not requested at all, so the device lacks them too.
   */
  disable?: Partial<Record<keyof GpuFeatures, boolean>>;
  /** Extra features to require (device creation fails if the adapter lacks one). */
  requiredFeatures?: readonly string[];
  /** Override requested limits (by default every limit in REQUESTED_MAX_LIMITS is the adapter's max). */
  requiredLimits?: Record<string, number>;
  /**
   * What to do when no adapter (or no WebGPU at all) is found: 'throw' (default) throws a
   * `HipAttnError` with code 'GPU'; 'null' resolves to null. Errors after an adapter was
   * found (device creation failing) always throw.
   */
  ifUnavailable?: 'throw' | 'null';
  /**
   * Treat a software adapter (`isSoftwareAdapter`: lavapipe, SwiftShader, WARP, …) as no
   * adapter, so that `ifUnavailable` applies. Default false. `loadModel`'s device 'auto' sets
   * it: on a CPU rasteriser the CPU backend is far faster (stories260K prefill: about 1 tok/s
   * on lavapipe, over 100 on the CPU).
   */
  skipSoftwareAdapters?: boolean;
  /** Label for the device. */
  label?: string;
  /**
   * Called with every uncaptured device error (validation, out-of-memory, internal). Default:
   * none (Dawn prints them); errors that matter should be caught with `withErrorScope`.
   */
  onUncapturedError?: (error: GPUError) => void;
}

/**
 * Acquires a WebGPU device and describes it. See `AcquireGpuOptions`.
 * @throws HipAttnError('GPU') when no adapter is found (unless `ifUnavailable: 'null'`) or
 *   the device cannot be created.
 */
export async function acquireGpu(options: AcquireGpuOptions & { ifUnavailable: 'null' }): Promise<GpuContext | null>;
export async function acquireGpu(options?: AcquireGpuOptions): Promise<GpuContext>;
export async function acquireGpu(options: AcquireGpuOptions = {}): Promise<GpuContext | null> {
  const disable = options.disable ?? {};
  if (options.device) {
    return makeContext(options.device, null, 'external', disable, false, options);
  }

  let runtime: GpuRuntime = 'external';
  let gpu: GPU | undefined = options.gpu;
  let adapter: GPUAdapter | null = options.adapter ?? null;
  if (!adapter) {
    if (!gpu) {
      const found = await findGpu(options);
      if (!found) return unavailable(options, describeMissingWebGpu(options));
      gpu = found.gpu;
      runtime = found.runtime;
    }
    const adapterOptions: GPURequestAdapterOptions = {};
    if (options.powerPreference) adapterOptions.powerPreference = options.powerPreference;
    if (options.forceFallbackAdapter) adapterOptions.forceFallbackAdapter = true;
    try {
      adapter = await gpu.requestAdapter(adapterOptions);
    } catch (cause) {
      return unavailable(options, `requestAdapter() failed: ${errorText(cause)}`, cause);
    }
    if (!adapter) {
      return unavailable(
        options,
        `WebGPU is present (${runtime}) but requestAdapter() found no adapter.` +
          (runtime === 'node'
            ? ' On Linux Dawn needs a Vulkan driver: install mesa-vulkan-drivers (lavapipe; from ' +
              'bookworm-backports on Debian 12) or a GPU driver, and set XDG_RUNTIME_DIR.'
            : ' In Chromium, WebGPU may need --enable-unsafe-webgpu and a secure context (https or localhost).'),
      );
    }
  }

  if (options.skipSoftwareAdapters) {
    const info = summarizeAdapterInfo(adapter.info);
    if (isSoftwareAdapter(info)) return unavailable(options, `the only adapter is a software one, ${summaryLine(info)}`);
  }

  const has = (f: string) => adapter!.features.has(f as GPUFeatureName);
  const wanted: string[] = [];
  if (!disable.shaderF16 && has(FEATURE_SHADER_F16)) wanted.push(FEATURE_SHADER_F16);
  if (!disable.subgroups && has(FEATURE_SUBGROUPS)) wanted.push(FEATURE_SUBGROUPS);
  // Subgroup matrices build on subgroups (and in practice on f16): never request them alone.
  if (!disable.subgroupMatrix && !disable.subgroups && has(FEATURE_SUBGROUP_MATRIX)) {
    wanted.push(FEATURE_SUBGROUP_MATRIX);
  }
  if (!disable.timestampQuery && has(FEATURE_TIMESTAMP_QUERY)) wanted.push(FEATURE_TIMESTAMP_QUERY);
  for (const f of options.requiredFeatures ?? []) if (!wanted.includes(f)) wanted.push(f);

  const requiredLimits: Record<string, number> = {};
  const adapterLimits = adapter.limits as unknown as Record<string, unknown>;
  for (const name of REQUESTED_MAX_LIMITS) {
    const v = adapterLimits[name];
    if (typeof v === 'number' && Number.isFinite(v)) requiredLimits[name] = v;
  }
  Object.assign(requiredLimits, options.requiredLimits ?? {});

  let device: GPUDevice;
  try {
    const descriptor: GPUDeviceDescriptor = {
      requiredFeatures: wanted as GPUFeatureName[],
      requiredLimits,
    };
    if (options.label) descriptor.label = options.label;
    device = await adapter.requestDevice(descriptor);
  } catch (cause) {
    throw new HipAttnError(
      'GPU',
      `requestDevice() failed on adapter ${summaryLine(summarizeAdapterInfo(adapter.info))} ` +
        `with features [${wanted.join(', ')}]: ${errorText(cause)}`,
      { cause },
    );
  }
  const ctx = makeContext(device, adapter, runtime, disable, true, options);
  // Keep the Dawn instance reachable for as long as the context is: dawn.node tears down the
  // instance when its GPU object is collected.
  if (gpu) Object.defineProperty(ctx, '_gpu', { value: gpu, enumerable: false });
  return ctx;
}

function makeContext(
  device: GPUDevice,
  adapter: GPUAdapter | null,
  runtime: GpuRuntime,
  disable: Partial<Record<keyof GpuFeatures, boolean>>,
  owned: boolean,
  options: AcquireGpuOptions,
): GpuContext {
  const has = (f: string) => device.features.has(f as GPUFeatureName);
  const features: GpuFeatures = {
    shaderF16: !disable.shaderF16 && has(FEATURE_SHADER_F16),
    subgroups: !disable.subgroups && has(FEATURE_SUBGROUPS),
    subgroupMatrix:
      !disable.subgroupMatrix && !disable.subgroups && has(FEATURE_SUBGROUP_MATRIX) && has(FEATURE_SUBGROUPS),
    timestampQuery: !disable.timestampQuery && has(FEATURE_TIMESTAMP_QUERY),
  };
  // `device.adapterInfo` exists in current WebGPU; fall back to the adapter's.
  const info = (device as unknown as { adapterInfo?: GPUAdapterInfo }).adapterInfo ?? adapter?.info;
  const adapterInfo = summarizeAdapterInfo(info);
  if (adapterInfo.subgroupMatrixConfigs.length === 0 && adapter?.info) {
    // the device's copy of the adapter info may omit the matrix configurations; the adapter's has them
    adapterInfo.subgroupMatrixConfigs = summarizeAdapterInfo(adapter.info).subgroupMatrixConfigs;
  }
  if (!features.subgroupMatrix) adapterInfo.subgroupMatrixConfigs = [];
  if (options.onUncapturedError) {
    const handler = options.onUncapturedError;
    device.addEventListener('uncapturederror', (ev) => handler((ev as GPUUncapturedErrorEvent).error));
  }
  let destroyed = false;
  return {
    device,
    adapter,
    adapterInfo,
    features,
    limits: copyLimits(device.limits),
    runtime,
    pipelines: new PipelineCache(device),
    lost: device.lost,
    destroy() {
      if (destroyed) return;
      destroyed = true;
      if (owned) device.destroy();
    },
  };
}

async function findGpu(options: AcquireGpuOptions): Promise<{ gpu: GPU; runtime: GpuRuntime } | null> {
  const backend = options.backend ?? 'auto';
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  if (backend !== 'node' && nav?.gpu) return { gpu: nav.gpu, runtime: 'browser' };
  if (backend === 'browser') return null;
  if (!isNode()) return null;
  let mod: { create: (toggles: string[]) => GPU };
  try {
    // A non-literal specifier keeps bundlers (esbuild, Vite) from pulling the Node addon into
    // browser bundles.
    const specifier = 'webgpu';
    mod = (await import(/* @vite-ignore */ specifier)) as typeof mod;
  } catch (cause) {
    if (options.ifUnavailable === 'null') return null;
    throw new HipAttnError(
      'GPU',
      `cannot load the 'webgpu' package (Dawn for Node): ${errorText(cause)}`,
      { cause },
    );
  }
  try {
    return { gpu: mod.create([...(options.dawnToggles ?? DEFAULT_DAWN_TOGGLES)]), runtime: 'node' };
  } catch (cause) {
    if (options.ifUnavailable === 'null') return null;
    throw new HipAttnError('GPU', `webgpu.create() failed: ${errorText(cause)}`, { cause });
  }
}

function isNode(): boolean {
  const p = (globalThis as { process?: { versions?: { node?: string } } }).process;
  return typeof p?.versions?.node === 'string';
}

function describeMissingWebGpu(options: AcquireGpuOptions): string {
  const backend = options.backend ?? 'auto';
  if (backend === 'browser' || !isNode()) {
    return 'navigator.gpu is not available: this browser has no WebGPU, or the page is not a secure context (https or localhost).';
  }
  return "no WebGPU implementation: neither navigator.gpu nor the 'webgpu' package is available.";
}

function unavailable(options: AcquireGpuOptions, message: string, cause?: unknown): null {
  if (options.ifUnavailable === 'null') return null;
  throw new HipAttnError('GPU', `No WebGPU adapter: ${message}`, cause === undefined ? undefined : { cause });
}

/** Copies `GPUAdapterInfo` into a plain object (its fields are getters that JSON.stringify skips). */
export function summarizeAdapterInfo(info: GPUAdapterInfo | undefined | null): GpuAdapterSummary {
  const i = (info ?? {}) as Partial<Record<string, unknown>>;
  // Dawn for Node returns a sequence that is not always a real Array: accept any iterable.
  const raw = i.subgroupMatrixConfigs as Iterable<unknown> | ArrayLike<unknown> | undefined | null;
  const configs: unknown[] = raw && (typeof (raw as Iterable<unknown>)[Symbol.iterator] === 'function' || typeof (raw as ArrayLike<unknown>).length === 'number') ? Array.from(raw as ArrayLike<unknown>) : [];
  return {
    vendor: String(i.vendor ?? ''),
    architecture: String(i.architecture ?? ''),
    device: String(i.device ?? ''),
    description: String(i.description ?? ''),
    isFallbackAdapter: Boolean(i.isFallbackAdapter ?? false),
    subgroupMinSize: Number(i.subgroupMinSize ?? 0),
    subgroupMaxSize: Number(i.subgroupMaxSize ?? 0),
    subgroupMatrixConfigs: configs.map((c) => {
      const o = c as Record<string, unknown>;
      return {
        componentType: String(o.componentType),
        resultComponentType: String(o.resultComponentType),
        M: Number(o.M),
        N: Number(o.N),
        K: Number(o.K),
      };
    }),
  };
}

/**
 * True for adapters that rasterise on the CPU: the platform's fallback flag, or a known
 * software implementation named in the vendor, architecture, device or description (Mesa's
 * llvmpipe/lavapipe/softpipe, SwiftShader, Microsoft's WARP / Basic Render Driver). Browsers
 * and Dawn do not always set `isFallbackAdapter` for them (Chromium's SwiftShader does not).
 */
export function isSoftwareAdapter(info: GpuAdapterSummary): boolean {
  if (info.isFallbackAdapter) return true;
  const text = `${info.vendor} ${info.architecture} ${info.device} ${info.description}`;
  return /llvmpipe|lavapipe|softpipe|swiftshader|microsoft basic render|\bwarp\b|\bsoftware\b/i.test(text);
}

/** One line naming an adapter, for logs and error messages. */
export function summaryLine(info: GpuAdapterSummary): string {
  const parts = [info.vendor, info.architecture, info.device, info.description].filter((s) => s !== '');
  return `"${parts.join(' / ') || 'unknown adapter'}"${info.isFallbackAdapter ? ' (fallback)' : ''}`;
}

function copyLimits(limits: GPUSupportedLimits): GpuLimits {
  const out: Record<string, number> = {};
  // The limits are getters on the prototype chain: walk it.
  for (let o: object | null = limits; o && o !== Object.prototype; o = Object.getPrototypeOf(o)) {
    for (const key of Object.getOwnPropertyNames(o)) {
      if (key === 'constructor' || key in out) continue;
      const v = (limits as unknown as Record<string, unknown>)[key];
      if (typeof v === 'number') out[key] = v;
    }
  }
  return out as GpuLimits;
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * Runs `fn` inside validation, out-of-memory and internal error scopes and turns the first
 * error into a `HipAttnError` ('OUT_OF_MEMORY' or 'GPU') whose message starts with `what`.
 * Use it around buffer creation and dispatches whose failure must not pass silently.
 */
export async function withErrorScope<T>(device: GPUDevice, what: string, fn: () => T | Promise<T>): Promise<T> {
  device.pushErrorScope('internal');
  device.pushErrorScope('out-of-memory');
  device.pushErrorScope('validation');
  let result: T;
  let thrown: unknown;
  let threw = false;
  try {
    result = await fn();
  } catch (e) {
    threw = true;
    thrown = e;
  }
  const validation = await device.popErrorScope();
  const oom = await device.popErrorScope();
  const internal = await device.popErrorScope();
  if (threw) throw thrown;
  if (oom) throw new HipAttnError('OUT_OF_MEMORY', `${what}: the GPU is out of memory: ${oom.message}`);
  if (validation) throw new HipAttnError('GPU', `${what}: WebGPU validation error: ${validation.message}`);
  if (internal) throw new HipAttnError('GPU', `${what}: WebGPU internal error: ${internal.message}`);
  return result!;
}
