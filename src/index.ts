/// <reference types="@webgpu/types" preserve="true" />
/**
 * hipattn — HiP (Hierarchically Pruned) attention for TypeScript: sub-quadratic sparse
 * attention for pretrained Llama-family LLMs, on WebGPU (Node through Dawn, and the browser)
 * with a CPU fallback.
 */
export * from './errors.js';
export * from './attention/index.js';
export { Rng, freshSeed } from './util/rng.js';
export { loadModel, embeddedModelPath, type LoadModelOptions, type LoadProgressEvent, type ModelSource, DEFAULT_MAX_CONTEXT } from './runtime/load.js';
export { type HubOptions, type HubModelId, parseHubId } from './runtime/hub-id.js';
export { HipModel, type Prompt, type StreamOptions, type GenerationStats, type GenerationStream } from './runtime/model.js';
export type { GeneratedToken, GenerateOptions, GenerationResult, FinishReason } from './model/generate.js';
export { type ChatMessage, DEFAULT_CHAT_TEMPLATE } from './model/chat-template.js';
export type { ModelBackend, DeviceKind } from './runtime/backend.js';
export { createServer, ApiError, type HipServer, type ServerOptions, type ServerStats, type ServedModel, type RequestLog } from './server/index.js';
export * as model from './model/index.js';
export * as gpu from './gpu/index.js';
export type * from './kernels/types.js';
