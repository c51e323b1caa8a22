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

export function buildProgram(): Command {
  const program = new Command();
  // commander's own usage errors (an invalid choice, an unknown flag) throw instead of exiting
  // with 1, so that every bad value exits 2 like the ones our parsers refuse; subcommands
  // registered below inherit this
  program.name('hipattn').description('HiP attention: sub-quadratic sparse attention for Llama-family LLMs on WebGPU and CPU').showHelpAfterError().exitOverride();
  registerAttentionDemo(program);
  registerBench(program);
  registerGenerate(program);
  registerEval(program);
  registerDemo(program);
  registerServe(program);
  return program;
}

async function main(): Promise<void> {
  try {
    await buildProgram().parseAsync(process.argv);
  } catch (e) {
    if (e instanceof HipAttnError) {
      console.error(`hipattn: ${e.message}`);
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
