#!/usr/bin/env node
/** The `hipattn` command line: thin commands that parse flags, call the library and print. */
import { Command, CommanderError } from 'commander';
import { HipAttnError } from '../errors.js';
import { registerAttentionDemo } from './attention-demo.js';
import { registerBench } from './bench.js';
import { registerDemo } from './demo.js';
import { registerEval } from './eval.js';
import { registerGenerate } from './generate.js';
import { registerServe } from './serve.js';
import { packageVersion } from './paths.js';
import { resolveAutoDevice } from './adapter-probe.js';

export function buildProgram(): Command {
  const program = new Command();
  // commander's own usage errors (an invalid choice, an unknown flag) throw instead of exiting
  // with 1, so that every bad value exits 2 like the ones our parsers refuse; subcommands
  // registered below inherit this
  program
    .name('hipattn')
    .description('HiP attention: sub-quadratic sparse attention for Llama-family LLMs on WebGPU and CPU')
    .version(packageVersion(), '-V, --version', 'print the version')
    .exitOverride();
  registerAttentionDemo(program);
  registerBench(program);
  registerGenerate(program);
  registerEval(program);
  registerDemo(program);
  registerServe(program);
  // `--device auto`: settle on the CPU before the command runs when WebGPU only has a
  // software adapter (adapter-probe.ts says why in a child process).
  program.hook('preAction', async (_program, action) => {
    if (action.opts().device === 'auto') action.setOptionValue('device', await resolveAutoDevice());
  });
  // After a usage error, a pointer to the command's help rather than the whole of it.
  for (const cmd of withSubcommands(program)) cmd.showHelpAfterError(helpHint(cmd));
  return program;
}

function withSubcommands(cmd: Command): Command[] {
  return [cmd, ...cmd.commands.flatMap(withSubcommands)];
}

/** `(see 'hipattn eval ppl --help')` for a command. */
function helpHint(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return `(see '${names.join(' ')} --help')`;
}

/** The command `argv` (without node and the script) runs: the deepest subcommand its leading words name. */
export function commandOf(program: Command, argv: readonly string[]): Command {
  let cmd = program;
  for (const word of argv) {
    const sub = cmd.commands.find((c) => c.name() === word || c.aliases().includes(word));
    if (!sub) break;
    cmd = sub;
  }
  return cmd;
}

async function main(): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync(process.argv);
  } catch (e) {
    if (e instanceof HipAttnError) {
      console.error(`hipattn: ${e.message}`);
      // a bad flag value or combination: point at the command's help
      if (e.code === 'INVALID_OPTION') console.error(helpHint(commandOf(program, process.argv.slice(2))));
      process.exitCode = 2;
      return;
    }
    if (e instanceof CommanderError) {
      // already printed by commander; help and version exit 0
      process.exitCode = e.exitCode === 0 ? 0 : 2;
      return;
    }
    throw e;
  }
}

await main();
