/**
 * The model layer: formats (safetensors, GGUF, config.json), tokenizers and chat templates, the
 * CPU Llama-family forward pass with its KV cache, sampling and the generation loop.
 * Everything exported here runs in the browser as well; Node file access is in ./node.js.
 */
export { type ByteSource, type ModelDirectory, blobSource, bufferSource, mapDirectory } from './byte-source.js';
export { type LlamaConfig, type ModelType, type RopeConfig, type RopeScaling, parseLlamaConfig, validateLlamaConfig } from './config.js';
export { bf16ToF32, f16ToF32, f32ToF16, f32ToF16Bits } from './dtypes.js';
export { type TensorInfo, type TensorStore, type StoredDType } from './tensor-store.js';
export { SafetensorsFile, ShardedSafetensors, openSafetensorsDir, writeSafetensors } from './safetensors.js';
export { type GgufFile, type GgufTensorInfo, type GgufValue, GgufTensorStore, dequantizeQ8_0, ggufLlamaConfig, openGgufModel, readGguf } from './gguf.js';
export { writeGguf } from './gguf-write.js';
export { type DecodeOptions, type EncodeOptions, HfTokenizer, StreamDecoder, type TextTokenizer } from './tokenizer.js';
export { SpmTokenizer } from './spm-tokenizer.js';
export { ggufTokenizer } from './gguf-tokenizer.js';
export { type ChatMessage, type ChatTemplateOptions, encodeChat, renderChat } from './chat-template.js';
export { ropeInvFreq, ropeTables, applyRope } from './rope.js';
export { type LayerWeights, type LlamaWeights, type LoadProgress, checkTensorShapes, loadLlamaWeightsF32 } from './weights.js';
export { type AttentionFn, type ForwardOptions, KvCache, LlamaCpu, type LlamaCpuOptions, denseAttentionFn } from './llama-cpu.js';
export { Rng, Sampler, type SamplingOptions } from './sampling.js';
export { type CausalLM, type FinishReason, type GenerateOptions, type GeneratedToken, type GenerationResult, generate, generateTokens } from './generate.js';
export { type GenerationDefaults, type OpenedModel, openGgufFile, openHfModel, parseGenerationConfig } from './load.js';
export { type GpuAttentionFn, type GpuAttentionModule, LlamaGpu, type LlamaGpuOptions, llamaGpuBytes } from './llama-gpu.js';
export { type SyntheticTensor, syntheticTensorStore, syntheticTensors } from './synthetic.js';
