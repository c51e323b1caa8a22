/**
 * The server's Prometheus metrics, written by hand in the text exposition format 0.0.4
 * (https://prometheus.io/docs/instrumenting/exposition_formats/): `# HELP` and `# TYPE` lines,
 * then one `name{label="value"} number` line per sample. Names follow llama-server's and vLLM's
 * (prompt and generated tokens, running and waiting requests, seconds spent reading prompts and
 * generating) under the `hipattn_` prefix; `rate(hipattn_prompt_tokens_total[1m]) /
 * rate(hipattn_prefill_seconds_total[1m])` is the prefill speed in tokens per second, and the
 * same with completion tokens and decode seconds the generation speed.
 */

/** The Content-Type of the exposition format. */
export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

type Labels = Readonly<Record<string, string>>;

/** Escapes a label value as the format asks: backslash, double quote and line feed. */
function labelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function labelText(labels: Labels): string {
  const entries = Object.entries(labels);
  return entries.length === 0 ? '' : `{${entries.map(([k, v]) => `${k}="${labelValue(v)}"`).join(',')}}`;
}

/** A number as the format writes it (+Inf, -Inf, NaN; integers without a fraction). */
function num(v: number): string {
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return Number.isNaN(v) ? 'NaN' : String(v);
}

/** A counter or gauge family: samples keyed by their labels. */
class Family {
  private readonly samples = new Map<string, { labels: Labels; value: number }>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: 'counter' | 'gauge',
  ) {}

  add(labels: Labels, by: number): void {
    const key = labelText(labels);
    const s = this.samples.get(key);
    if (s) s.value += by;
    else this.samples.set(key, { labels, value: by });
  }

  set(labels: Labels, value: number): void {
    this.samples.set(labelText(labels), { labels, value });
  }

  get(labels: Labels = {}): number {
    return this.samples.get(labelText(labels))?.value ?? 0;
  }

  write(out: string[]): void {
    out.push(`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} ${this.type}`);
    for (const [key, s] of this.samples) out.push(`${this.name}${key} ${num(s.value)}`);
  }
}

/** A histogram with fixed upper bounds (cumulative `_bucket{le}` counts, `_sum`, `_count`). */
class Histogram {
  private readonly counts: number[];
  private sum = 0;
  private count = 0;

  constructor(
    readonly name: string,
    readonly help: string,
    readonly bounds: readonly number[],
  ) {
    this.counts = bounds.map(() => 0);
  }

  observe(v: number): void {
    this.bounds.forEach((b, i) => {
      if (v <= b) this.counts[i]!++;
    });
    this.sum += v;
    this.count++;
  }

  write(out: string[]): void {
    out.push(`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`);
    this.bounds.forEach((b, i) => out.push(`${this.name}_bucket{le="${num(b)}"} ${this.counts[i]}`));
    out.push(`${this.name}_bucket{le="+Inf"} ${this.count}`, `${this.name}_sum ${num(this.sum)}`, `${this.name}_count ${this.count}`);
  }
}

/** Seconds: from 10 ms to 10 minutes. */
const SECONDS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];

/** The gauges, read when /metrics is asked for. */
export interface MetricsGauges {
  running: number;
  waiting: number;
  slots: number;
  queueCapacity: number;
  /** 1 while the server takes new requests (see GET /ready), else 0. */
  ready: number;
}

/** Where a generation request ended (the `outcome` label). */
export type GenerationOutcome = 'stop' | 'length' | 'client_closed' | 'shutdown' | 'error';

export class ServerMetrics {
  readonly requests = new Family('hipattn_requests_total', 'HTTP requests answered, by route (the pattern that matched, "unmatched" for none) and status code.', 'counter');
  readonly generations = new Family(
    'hipattn_generations_total',
    'Generation requests that got past validation, by outcome: stop or length (finished), client_closed (the client left, running or queued), shutdown (stopped or refused by shutdown), error (the model failed).',
    'counter',
  );
  readonly promptTokens = new Family('hipattn_prompt_tokens_total', 'Prompt tokens of the generations that started (prefill).', 'counter');
  readonly completionTokens = new Family('hipattn_completion_tokens_total', 'Tokens generated (decode).', 'counter');
  readonly prefillSeconds = new Family('hipattn_prefill_seconds_total', 'Seconds spent reading prompts: from the start of a generation to its first token.', 'counter');
  readonly decodeSeconds = new Family('hipattn_decode_seconds_total', 'Seconds spent generating after the first token.', 'counter');
  readonly timeToFirstToken = new Histogram('hipattn_time_to_first_token_seconds', 'Seconds from the start of a generation (after the queue) to its first token.', SECONDS);
  readonly queueSeconds = new Histogram('hipattn_queue_wait_seconds', 'Seconds generation requests waited for a free slot.', SECONDS);
  readonly requestSeconds = new Histogram('hipattn_generation_duration_seconds', 'Seconds from receiving a generation request to its end (queue, prefill, decode).', SECONDS);

  constructor() {
    // Counters without labels are there from the start (0), so that rate() has a first sample.
    for (const f of [this.promptTokens, this.completionTokens, this.prefillSeconds, this.decodeSeconds]) f.add({}, 0);
  }

  /** The exposition text, with the gauges as of now. */
  render(g: MetricsGauges): string {
    const gauges = [
      new Family('hipattn_requests_running', 'Generations running now (slots in use).', 'gauge'),
      new Family('hipattn_requests_waiting', 'Requests waiting for a free slot.', 'gauge'),
      new Family('hipattn_slots', 'Model slots (generations that can run at once).', 'gauge'),
      new Family('hipattn_queue_capacity', 'Requests that may wait for a slot; more get 429.', 'gauge'),
      new Family('hipattn_ready', '1 while the server takes new requests (GET /ready answers 200), else 0.', 'gauge'),
    ];
    [g.running, g.waiting, g.slots, g.queueCapacity, g.ready].forEach((v, i) => gauges[i]!.set({}, v));
    const out: string[] = [];
    for (const f of [this.requests, this.generations, this.promptTokens, this.completionTokens, this.prefillSeconds, this.decodeSeconds, ...gauges]) f.write(out);
    for (const h of [this.timeToFirstToken, this.queueSeconds, this.requestSeconds]) h.write(out);
    return `${out.join('\n')}\n`;
  }
}
