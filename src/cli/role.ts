/**
 * `kvm-mmu-emu role ...`: decode, compute and replay roles. Parsing and
 * printing only; the work is in src/role and src/mmu.
 */
import type { Command } from 'commander';
import { hex32 } from '../role/bitfield.js';
import { FORMAT_V517 } from '../role/ext-role.js';
import { PAGE_ROLE, formatPageRoleTrace } from '../role/page-role.js';
import { computeState, replaySequence } from '../mmu/probe.js';
import { computeStateSchema, parseOrThrow, ProbeInputError, sequenceSchema } from '../mmu/probe-schema.js';
import { STRATEGY_NAMES, strategyByName, type InvalidationStrategy } from '../mmu/strategies.js';
import { jsonLines, readJson, UsageError } from './io.js';

const STRATEGY_HELP = `invalidation design: ${STRATEGY_NAMES.join(', ')}`;

export function parseStrategy(name: string): InvalidationStrategy {
  try {
    return strategyByName(name);
  } catch (e) {
    throw new UsageError(`--strategy: ${(e as Error).message}`);
  }
}

function parseWord(text: string, what: string): number {
  const t = text.trim();
  if (!/^(0x)?[0-9a-f]{1,8}$/i.test(t)) throw new UsageError(`${what}: expected a 32-bit hex word like 0x00003784, got "${text}"`);
  return Number.parseInt(t.replace(/^0x/i, ''), 16) >>> 0;
}

const asInputError = <T>(fn: () => T): T => {
  try {
    return fn();
  } catch (e) {
    if (e instanceof ProbeInputError) throw new UsageError(e.message);
    throw e;
  }
};

/** role compute: JSON array of states in, JSON array of results out. */
export function roleCompute(file: string | undefined, strategy: InvalidationStrategy): string {
  const input = readJson(file);
  const states = Array.isArray(input) ? input : [input];
  const results = states.map((s, i) => asInputError(() => computeState(parseOrThrow(computeStateSchema, s, `state ${i}`), strategy)));
  return jsonLines(results);
}

/** role replay: a sequence (or an array of sequences) in, results per step out. */
export function roleReplay(file: string | undefined, strategy: InvalidationStrategy): string {
  const input = readJson(file);
  if (Array.isArray(input)) {
    const all = input.map((seq, i) => asInputError(() => replaySequence(parseOrThrow(sequenceSchema, seq, `sequence ${i}`), strategy)));
    return '[\n' + all.map((r) => jsonLines(r)).join(',\n') + '\n]';
  }
  return jsonLines(asInputError(() => replaySequence(parseOrThrow(sequenceSchema, input, 'sequence'), strategy)));
}

/** role decode: every field of a page role (and ext role), plus tracepoint notation. */
export function roleDecode(baseHex: string, opts: { ext?: string; strategy?: string; json?: boolean }): string {
  const base = parseWord(baseHex, 'HEX');
  const format = opts.strategy ? parseStrategy(opts.strategy).format : FORMAT_V517;
  const ext = opts.ext === undefined ? undefined : parseWord(opts.ext, '--ext');
  const b = PAGE_ROLE.decode(base);
  if (opts.json) {
    const out: Record<string, unknown> = { base: hex32(base), baseFields: b, trace: formatPageRoleTrace(base) };
    if (ext !== undefined) {
      out.ext = hex32(ext);
      out.extLayout = format.name;
      out.extFields = format.ext.decode(ext);
    }
    return JSON.stringify(out, null, 2);
  }
  const lines = [`base ${hex32(base)}`];
  for (const f of PAGE_ROLE.names) lines.push(`  ${f.padEnd(16)} ${b[f]}`);
  if (b.unused) lines.push(`  ${'(unused bits)'.padEnd(16)} ${hex32(b.unused)}`);
  lines.push(`  kvmmmu: ${formatPageRoleTrace(base)}`);
  if (ext !== undefined) {
    const x = format.ext.decode(ext);
    lines.push(`ext ${hex32(ext)} (layout ${format.name})`);
    for (const f of format.ext.names) lines.push(`  ${f.padEnd(16)} ${x[f]}`);
    if (x.unused) lines.push(`  ${'(unused bits)'.padEnd(16)} ${hex32(x.unused)}`);
  }
  return lines.join('\n');
}

export function registerRole(program: Command): void {
  const role = program.command('role').description('decode, compute and replay MMU roles, bit-exact with Linux v5.17');

  role
    .command('decode')
    .argument('<HEX>', 'page role word (kvm_mmu_page_role)')
    .option('--ext <HEX>', 'extended role word (kvm_mmu_extended_role)')
    .option('--strategy <NAME>', `decode the ext word in the layout of this design (${STRATEGY_NAMES.join(', ')})`)
    .option('--json', 'print JSON')
    .description('print every field of a role')
    .addHelpText('after', '\nExamples:\n  kvm-mmu-emu role decode 0x3784 --ext 0x28d\n  kvm-mmu-emu role decode 0x00030704 --json')
    .action((hex: string, opts: { ext?: string; strategy?: string; json?: boolean }) => {
      console.log(roleDecode(hex, opts));
    });

  role
    .command('compute')
    .argument('[FILE]', 'JSON array of states; - or nothing for stdin')
    .option('--strategy <NAME>', STRATEGY_HELP, 'valid-bit')
    .description('compute the role and reconfiguration products of one init per state, on a fresh vCPU')
    .addHelpText(
      'after',
      '\nEach state: {"path": "tdp"|"shadow"|"shadow-npt"|"shadow-ept"|"nested", "cr0", "cr4", "efer", "smm",\n' +
        '  "guestMode", "cpuid": {...}, "host": {...}, "ept": {...}}. See README "role compute".\n\n' +
        'Examples:\n  kvm-mmu-emu role compute examples/role-states.json\n  kvm-mmu-emu role compute --strategy level-zero - < states.json',
    )
    .action((file: string | undefined, opts: { strategy: string }) => {
      console.log(roleCompute(file, parseStrategy(opts.strategy)));
    });

  role
    .command('replay')
    .argument('<FILE>', 'a sequence {"host","cpuid","ept"?,"steps"} or an array of them; - for stdin')
    .option('--strategy <NAME>', STRATEGY_HELP, 'valid-bit')
    .description('run one vCPU through init and setCpuid steps; print the touched context per step')
    .addHelpText('after', '\nExamples:\n  kvm-mmu-emu role replay examples/role-sequence.json --strategy level-zero')
    .action((file: string, opts: { strategy: string }) => {
      console.log(roleReplay(file, parseStrategy(opts.strategy)));
    });
}

