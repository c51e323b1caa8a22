/** Messages between the page and the analysis worker (analysis-worker.ts). */
import type { RecallRow } from '../../src/eval/recall.js';
import type { HipOptions, StreamingOptions } from '../../src/attention/options.js';
import type { Method } from './categories.js';

/** A model's files: a Hugging Face directory (file name → Blob) or one GGUF file. */
export type ModelFiles = { kind: 'dir'; name: string; files: Map<string, Blob> } | { kind: 'gguf'; name: string; file: Blob };

export type WorkerRequest =
  | { id: number; type: 'open'; model: ModelFiles }
  | { id: number; type: 'analyse'; text: string; hip: HipOptions; streaming: StreamingOptions; maxTokens: number }
  | { id: number; type: 'query'; layer: number; head: number; index: number; method: Method }
  | { id: number; type: 'matrix'; layer: number; head: number; method: Method; maxSide: number };

/** A request without its id (the page's ask() adds it). */
export type WorkerRequestBody = WorkerRequest extends infer R ? (R extends unknown ? Omit<R, 'id'> : never) : never;

export interface QueryAnswer {
  layer: number;
  head: number;
  index: number;
  position: number;
  queryBlock: number;
  /** Categories of keys 0 … T−1 for the method asked (Cat values; keys after the query: Future). */
  categories: Uint8Array;
  /** The same for every method (for the comparison table's counts). */
  probs: Float32Array;
  hipBlocks: number[];
  exactBlocks: number[];
  candidateBlocks: number;
  blocksPerQuery: number;
  recall: number;
  /** Per method: keys read, fraction of the exact top-k keys read, attention mass covered. */
  figures: Record<Method, { keys: number; topKRead: number; mass: number }>;
}

export interface AnalysisSummary {
  /** Text of each prompt token (special tokens by name), whether it is a special token, and its id. */
  tokens: string[];
  special: boolean[];
  ids: number[];
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  hip: HipOptions;
  streaming: StreamingOptions;
  rows: RecallRow[];
  /** Milliseconds: CPU forward pass capturing q/k, and the masks + recall of every layer. */
  captureMs: number;
  masksMs: number;
  /** True when the prompt was cut to maxTokens. */
  truncated: boolean;
}

export interface MatrixAnswer {
  layer: number;
  head: number;
  method: Method;
  /** Rows = queries, columns = keys, both binned to `side` (the majority-priority category of each bin). */
  side: number;
  tokens: number;
  cells: Uint8Array;
}

export type WorkerResponse =
  | { id: number; type: 'progress'; fraction: number; label: string }
  | { id: number; type: 'opened'; name: string; config: { layers: number; heads: number; kvHeads: number; headDim: number; vocab: number; hidden: number } }
  | { id: number; type: 'analysed'; summary: AnalysisSummary }
  | { id: number; type: 'query'; answer: QueryAnswer }
  | { id: number; type: 'matrix'; answer: MatrixAnswer }
  | { id: number; type: 'error'; message: string };
