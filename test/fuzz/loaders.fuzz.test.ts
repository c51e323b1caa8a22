/**
 * Loader fuzzing in CI: 2,000 mutated files per loader (bench/fuzz/loaders.ts says what is
 * mutated and what each case runs). Every case must load or throw a HipAttnError, within a
 * bound that detects hangs, and the run must not grow the resident set by more than a bound
 * that an allocation sized by a corrupt count (gigabytes) would break. Larger runs:
 * `npm run fuzz:loaders -- --cases 10000` (BENCHMARKS.md, "Loader fuzzing").
 */
import { describe, expect, it } from 'vitest';
import { packageRoot } from '../../src/cli/paths.js';
import { freshSeed } from '../../src/util/rng.js';
import { LOADERS, formatReport, fuzzLoader } from '../../bench/fuzz/loaders.js';

const CASES = 2000;
/** Generous: a case takes milliseconds; a hang or a billion-step loop takes far longer. */
const CASE_BOUND_MS = 5000;
const RSS_BOUND_MIB = 512;
const seed = Number(process.env.HIPATTN_SEED ?? freshSeed());
console.log(`loaders.fuzz.test seed ${seed} (set HIPATTN_SEED to reproduce)`);

describe('loader fuzzing', () => {
  for (const loader of LOADERS) {
    it(`${loader}: ${CASES} mutated files load or give a HipAttnError, each quickly, in bounded memory`, async () => {
      const r = await fuzzLoader(loader, { cases: CASES, seed, root: packageRoot() });
      console.log(formatReport(r));
      expect(r.failures.slice(0, 5)).toEqual([]);
      expect(r.cases).toBe(CASES);
      expect(r.loaded + Object.values(r.refused).reduce((a, b) => a + b, 0)).toBe(CASES);
      // The mutations reach both outcomes (a fuzzer whose every case dies at the first check tests little).
      expect(r.loaded).toBeGreaterThan(0);
      expect(r.refused.MODEL_FORMAT ?? 0).toBeGreaterThan(0);
      expect(r.maxCaseMs, r.slowest).toBeLessThan(CASE_BOUND_MS);
      expect(r.rssGrowthMiB).toBeLessThan(RSS_BOUND_MIB);
    }, 120_000);
  }
});
