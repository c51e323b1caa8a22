/**
 * `loadModel`: open a model (a Hugging Face directory, a GGUF file, a Hub id, or browser files),
 * pick a device, and return a ready HipModel.
 */
import { HipAttnError } from '../errors.js';
import { type AttentionConfig, type AttentionMethod, resolveAttentionConfig } from '../attention/method.js';
import type { ByteSource, ModelDirectory } from '../model/byte-source.js';
import { type OpenedModel, openGgufFile, openHfModel } from '../model/load.js';
import type { ModelBackend } from './backend.js';
import type { HubOptions } from './hub-id.js';
import { createCpuBackend } from './cpu-backend.js';
import { createGpuBackend } from './gpu-backend.js';
import { acquireGpu, type GpuContext } from '../gpu/device.js';
import type { StorageType } from '../kernels/types.js';
import { HipModel } from './model.js';

export interface LoadProgressEvent {
  /** 'download': fetching files from the Hub; 'weights': reading tensors into the device; 'ready': done. */
  stage: 'download' | 'weights' | 'ready';
  /** File or tensor being processed. */
  item?: string;
  loaded: number;
  total: number;
}

export interface LoadModelOptions {
  /**
   * 'auto' (default): WebGPU on a hardware adapter, else the CPU (software adapters such as
   * lavapipe or SwiftShader are passed over: the CPU backend is far faster than them);
   * 'webgpu': any WebGPU adapter, software ones included (an error when there is none); 'cpu'.
   */
  device?: 'auto' | 'cpu' | 'webgpu';
  /** A WebGPU context to use (from `acquireGpu`, e.g. wrapping a GPUDevice you already have); implies device 'webgpu'. */
  gpu?: GpuContext;
  /** WebGPU storage type of weights, activations and the KV cache (default f16 where supported, else f32). */
  dtype?: StorageType;
  /** WebGPU: largest prefill chunk in tokens (a multiple of HiP's blockSizeQ keeps masks equal to a whole prefill). Default 256. */
  prefillChunk?: number;
  /** Attention method and options (default: HiP with HIP.md's defaults). */
  attention?: AttentionConfig | AttentionMethod;
  /** KV-cache capacity in tokens. Default: the model's max_position_embeddings, at most 16384. */
  contextLength?: number;
  /**
   * Called while loading: 'download' events per file while a Hub model is fetched (throttled,
   * the last one per file has loaded = total), 'weights' per tensor, then 'ready'.
   */
  onProgress?: (event: LoadProgressEvent) => void;
  /**
   * Hub ids (Node only): a string that is not an existing local path but reads as
   * `org/name[@revision][/file.gguf]` is downloaded into the Hugging Face cache (or found there).
   */
  hub?: HubOptions;
}

/** The largest default context (a longer one must be asked for: the KV cache is allocated up front). */
export const DEFAULT_MAX_CONTEXT = 16384;

export type ModelSource = string | ModelDirectory | ByteSource;

/** The Node-only module behind string sources (a variable, so that bundlers leave it out). */
const NODE_SOURCES: string = './hub.js';
const NODE_EMBEDDED: string = './embedded.js';

/**
 * The embedded model's folder (hip-testbed-mini inside the installed package; Node only), the
 * model `loadModel()` opens without a source.
 */
export async function embeddedModelPath(): Promise<string> {
  if (typeof (globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node !== 'string') {
    throw new HipAttnError('UNSUPPORTED', 'the embedded model is a folder of the installed package (Node only); in the browser pass a ModelDirectory or a ByteSource to loadModel');
  }
  const { embeddedModelPath: find } = (await import(/* @vite-ignore */ /* webpackIgnore: true */ NODE_EMBEDDED)) as typeof import('./embedded.js');
  return find();
}

async function open(source: ModelSource | undefined, options: LoadModelOptions): Promise<{ opened: OpenedModel; name: string }> {
  if (source === undefined) {
    // The embedded model: a folder inside the installed package, found from this module's URL.
    const { openModelString } = (await import(/* @vite-ignore */ /* webpackIgnore: true */ NODE_SOURCES)) as typeof import('./hub.js');
    const dir = await embeddedModelPath();
    return { opened: await openModelString(dir), name: dir };
  }
  if (typeof source === 'string') {
    // Paths and Hub ids are Node only: imported lazily, through a specifier bundlers do not
    // follow, so that browser bundles never pull node:fs or @huggingface/hub's Node code.
    const { openModelString } = (await import(/* @vite-ignore */ /* webpackIgnore: true */ NODE_SOURCES)) as typeof import('./hub.js');
    const progress = options.onProgress;
    return { opened: await openModelString(source, { ...options.hub, ...(progress ? { onProgress: progress } : {}) }), name: source };
  }
  if ('open' in source) return { opened: await openHfModel(source), name: source.name };
  return { opened: await openGgufFile(source), name: source.name };
}

/**
 * Loads a model: `source` is a local folder or GGUF file, a Hub id (Node; see README "Model
 * sources"), browser files, or nothing for the embedded hip-testbed-mini (Node).
 */
export async function loadModel(source?: ModelSource, options: LoadModelOptions = {}): Promise<HipModel> {
  const attention = resolveAttentionConfig(options.attention);
  const device = options.device ?? 'auto';
  if (!['auto', 'cpu', 'webgpu'].includes(device)) {
    throw new HipAttnError('INVALID_OPTION', `device must be auto, cpu or webgpu, got ${String(device)}`);
  }
  const { opened, name } = await open(source, options);
  try {
    const { config } = opened;
    const capacity = options.contextLength ?? Math.min(config.maxPositionEmbeddings, DEFAULT_MAX_CONTEXT);
    if (!Number.isSafeInteger(capacity) || capacity < 1) {
      throw new HipAttnError('INVALID_OPTION', `contextLength must be a positive integer, got ${capacity}`);
    }
    const progress = options.onProgress;
    const onWeights = progress && ((p: { loaded: number; total: number; tensor: string }) => progress({ stage: 'weights', item: p.tensor, loaded: p.loaded, total: p.total }));
    let backend: ModelBackend;
    // 'auto' passes over software adapters (the CPU backend beats a CPU rasteriser by far);
    // 'webgpu' takes whatever adapter there is.
    const gpu = options.gpu ?? (device === 'cpu' ? null : device === 'webgpu' ? await acquireGpu() : await acquireGpu({ ifUnavailable: 'null', skipSoftwareAdapters: true }));
    if (gpu) {
      backend = await createGpuBackend(gpu, config, { store: opened.store }, attention, capacity, {
        ...(options.dtype ? { dtype: options.dtype } : {}),
        ...(options.prefillChunk ? { maxChunk: options.prefillChunk } : {}),
        ...(onWeights ? { onProgress: onWeights } : {}),
        ownsGpu: !options.gpu,
      });
    } else {
      backend = await createCpuBackend(config, opened.store, attention, capacity, onWeights);
    }
    progress?.({ stage: 'ready', loaded: 1, total: 1 });
    return new HipModel(name, config, opened.tokenizer, opened.generation, attention, backend, opened.store);
  } catch (e) {
    await opened.store.close();
    throw e;
  }
}
