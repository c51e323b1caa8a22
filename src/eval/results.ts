/**
 * The JSON document an evaluation writes (`--json FILE`): what ran (model, options, device,
 * date) and the finished rows. It is rewritten after every finished cell (to a temporary file,
 * then renamed), so an interrupted run leaves a valid document with what it finished.
 */
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { MethodTiming } from './run.js';

export type EvalTask = 'ppl' | 'passkey' | 'kv' | 'niah' | 'demo';

export interface EvalDocument<Row> {
  task: EvalTask;
  /** The model's path or Hub id. */
  model: string;
  /** Options of the run: lengths/depths/trials/seed or files/contexts, attention options, … */
  options: Record<string, unknown>;
  /** ISO 8601 start time. */
  date: string;
  /** The backend that ran the model (e.g. "CPU (float32, JavaScript)"). */
  device: string;
  /** Finished cells. */
  rows: Row[];
  /** Seconds and tokens per attention method (model loading excluded). */
  timings: MethodTiming[];
  /** True while running or when stopped early; false once every cell finished. */
  incomplete: boolean;
  /** Per-trial outputs of retrieval tasks (answer, generated text, correct). */
  outputs?: unknown[];
}

/** Writes `doc` to `file` atomically (temporary file + rename). */
export async function writeJsonAtomic(file: string, doc: unknown): Promise<void> {
  await mkdir(dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, `${JSON.stringify(doc, null, 2)}\n`);
  await rename(tmp, file);
}
