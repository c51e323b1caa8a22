/**
 * `npm run fuzz:loaders -- [--cases N] [--seed S] [--loaders safetensors,config,tokenizer,gguf]`:
 * the loader fuzzer (bench/fuzz/loaders.ts) with as many cases as asked (CI runs 2,000 per
 * loader through test/fuzz/loaders.fuzz.test.ts). Prints one line per loader and the first
 * failures; exits 1 when any case threw something other than a HipAttnError.
 */
import { Command } from 'commander';
import { intArg } from '../src/cli/attention-options.js';
import { packageRoot } from '../src/cli/paths.js';
import { freshSeed } from '../src/util/rng.js';
import { LOADERS, type LoaderName, formatReport, fuzzLoader } from './fuzz/loaders.js';

const program = new Command()
  .option('--cases <n>', 'cases per loader', intArg('--cases'), 10000)
  .option('--seed <n>', 'random seed (default: fresh, printed)', intArg('--seed'))
  .option('--loaders <list>', `comma-separated subset of ${LOADERS.join(', ')}`, LOADERS.join(','))
  .parse();
const opts = program.opts<{ cases: number; seed?: number; loaders: string }>();
const seed = opts.seed ?? freshSeed();
const loaders = opts.loaders.split(',').map((s) => s.trim()) as LoaderName[];
for (const l of loaders) {
  if (!LOADERS.includes(l)) {
    console.error(`--loaders: unknown loader ${JSON.stringify(l)} (known: ${LOADERS.join(', ')})`);
    process.exit(2);
  }
}
console.log(`loader fuzzing: ${opts.cases} cases per loader, seed ${seed}`);
let failed = false;
for (const loader of loaders) {
  const r = await fuzzLoader(loader, { cases: opts.cases, seed, root: packageRoot() });
  console.log(formatReport(r));
  console.log(`  slowest: ${r.slowest}`);
  for (const f of r.failures.slice(0, 10)) console.log(`  FAIL case ${f.index} (${f.what}): ${f.error}`);
  failed ||= r.failures.length > 0;
}
process.exit(failed ? 1 : 0);
