/** Shared by the server tests (server, server-hardening, server-soak): JSON bodies, /health, polling. */
import type { ServerStats } from '../src/server/index.js';

export type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function health(url: string): Promise<ServerStats> {
  return (await (await fetch(`${url}/health`)).json()) as ServerStats;
}

/** Calls `f` every 20 ms until `ok` holds of its result or `ms` have passed; returns the last result. */
export async function waitFor<T>(f: () => Promise<T>, ok: (v: T) => boolean, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (ok(v) || Date.now() > end) return v;
    await sleep(20);
  }
}
