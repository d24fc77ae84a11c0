#!/usr/bin/env node
/**
 * The kvm-mmu-emu command line. Parsing and printing only: every command
 * calls into the library. Exit codes: 0 ok, 1 violation found / check
 * failed, 2 usage or input error.
 */
import { Command, CommanderError } from 'commander';
import { EXIT, UsageError } from './io.js';
import { registerRole } from './role.js';
import { registerWalk } from './walk.js';
import { registerBench } from './bench.js';
import { registerRun } from './run.js';
import { registerStress } from './stress.js';
import { registerSim } from './sim.js';

export function buildProgram(): Command {
  const program = new Command('kvm-mmu-emu')
    .description('An emulator of the Linux KVM x86 MMU role machinery (v5.17) and of five designs for invalidating cached roles after a CPUID change')
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  registerRun(program);
  registerStress(program);
  registerSim(program);
  registerRole(program);
  registerWalk(program);
  registerBench(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return process.exitCode === undefined ? EXIT.OK : Number(process.exitCode);
  } catch (e) {
    if (e instanceof CommanderError) {
      // --help and --version exit through here with code 0.
      return e.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
    }
    if (e instanceof UsageError) {
      process.stderr.write(`kvm-mmu-emu: ${e.message}\n`);
      return EXIT.USAGE;
    }
    process.stderr.write(`kvm-mmu-emu: internal error: ${(e as Error).stack ?? String(e)}\n`);
    return 70;
  }
}

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
