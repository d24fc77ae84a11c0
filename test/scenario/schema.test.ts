/**
 * Scenario file validation: every example validates, the docs' example
 * validates, and each kind of bad input gets one line naming the field path,
 * the bad value and what is allowed — never a stack trace.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { loadScenario, parseScenario, ScenarioError } from '../../src/scenario/load.js';
import { SCENARIO_LIMITS } from '../../src/scenario/schema.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { buildGuestTables, DEFAULT_GUEST_TABLES } from '../../src/workload/guest-tables.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const examples = readdirSync(join(root, 'examples'))
  .filter((f) => /^scenario-.*\.json$/.test(f))
  .map((f) => join('examples', f));

const base = { name: 't', vcpus: 2 };

/** The error lines for an input (the test fails if it is accepted or throws anything else). */
function problems(input: unknown): string[] {
  const text = typeof input === 'string' ? input : JSON.stringify(input);
  try {
    parseScenario(text, 'bad.json');
  } catch (e) {
    expect(e).toBeInstanceOf(ScenarioError);
    const msg = (e as ScenarioError).message;
    expect(msg).not.toMatch(/\n\s+at /); // no stack trace
    return (e as ScenarioError).problems.slice();
  }
  throw new Error(`accepted: ${text.slice(0, 200)}`);
}

/** Exactly one problem, at `path`, mentioning the allowed values and the bad value. */
function oneProblem(input: unknown, path: string, allowed: RegExp, got?: string): string {
  const p = problems(input);
  expect(p, p.join('\n')).toHaveLength(1);
  expect(p[0]).toContain(`bad.json: ${path}: `);
  expect(p[0]).toMatch(allowed);
  if (got !== undefined) expect(p[0]).toContain(`(got ${got})`);
  return p[0]!;
}

describe('scenario examples', () => {
  it('there are at least four, including the four the issue names', () => {
    for (const n of ['tour', 'stress-64', 'nested', 'mixed-maxphyaddr']) expect(examples).toContain(`examples/scenario-${n}.json`);
  });

  it.each(examples)('%s validates', (file) => {
    const s = loadScenario(join(root, file));
    expect(s.name.length).toBeGreaterThan(0);
    expect(s.description.length).toBeGreaterThan(100);
    expect(s.events.length).toBeGreaterThan(0);
  });

  it('the stress example has 64 vCPUs, legacy policy, CPUID changes and zap-alls', () => {
    const s = loadScenario(join(root, 'examples/scenario-stress-64.json'));
    expect(s.vcpus).toBe(64);
    expect(s.policy).toBe('legacy');
    expect(s.events.filter((e) => e.kind === 'set-cpuid').length).toBeGreaterThan(5);
    expect(s.events.filter((e) => e.kind === 'zap-all').length).toBeGreaterThan(1);
    expect(s.durationMs).toBeLessThanOrEqual(3000);
  });

  it('the mixed-MAXPHYADDR example gives its vCPUs different MAXPHYADDR and explains the caveat', () => {
    const s = loadScenario(join(root, 'examples/scenario-mixed-maxphyaddr.json'));
    const values = new Set(s.vcpuSetup.map((v) => v.cpuid?.maxPhyAddr).filter((x) => x !== undefined));
    expect(values.size).toBeGreaterThan(1);
    expect(s.description).toMatch(/not part of the page role/);
  });

  it('the example in docs/scenarios.md validates', () => {
    const doc = readFileSync(join(root, 'docs/scenarios.md'), 'utf8');
    const block = /## Example\s+```json\n([\s\S]*?)```/.exec(doc);
    expect(block).not.toBeNull();
    const s = parseScenario(block![1]!, 'docs/scenarios.md');
    expect(s.events).toHaveLength(3);
  });
});

describe('the guest-table layout docs/scenarios.md promises (edit-pte addresses in the examples rely on it)', () => {
  it.each([
    [2, 1],
    [64, 7],
  ])('%i MiB, seed %i', (mib, seed) => {
    const mem = GuestMemory.create(mib * 2 ** 20);
    const t = buildGuestTables(mem, { ...DEFAULT_GUEST_TABLES, seed });
    const hexes = (xs: readonly bigint[]) => xs.map((x) => '0x' + x.toString(16));
    expect(hexes(t.cr3.paging32)).toEqual(['0x1000', '0x3000', '0x5000']);
    expect(hexes(t.cr3.pae)).toEqual(['0x7000', '0xa000', '0xd000']);
    expect(hexes(t.cr3.long4)).toEqual(['0x10000', '0x14000', '0x18000']);
    expect(hexes(t.cr3.long5)).toEqual(['0x1c000', '0x21000', '0x26000']);
    // long4:0 → PML4 0x10000, PDPT 0x11000, PD 0x12000, PT 0x13000.
    let table = 0x10000;
    for (const next of [0x11000, 0x12000, 0x13000]) {
      table = Number(mem.load64(table) & 0xffffffffff000n);
      expect(table).toBe(next);
    }
    expect(mem.load64(0x13000 + 8 * 5) & 1n).toBe(1n); // page 5 is mapped
  });
});

describe('defaults', () => {
  it('fill in every optional field', () => {
    const s = parseScenario('{"name": "min"}');
    expect(s).toMatchObject({ vcpus: 1, host: ['intel-ept'], strategy: 'all', policy: 'legacy', check: 'full', durationMs: 2000, seed: 1, memoryBytes: 64 * 2 ** 20 });
  });

  it('opsBudget alone gets the 60 s time cap; units and table references parse', () => {
    const s = parseScenario(
      JSON.stringify({ ...base, opsBudget: 1000, memoryBytes: '2 MiB', vcpuSetup: [{ vcpus: { from: 0, to: 1 }, regs: { cr3: 'long5:2', cr0: '0x80000011' } }] }),
    );
    expect(s.durationMs).toBe(60_000);
    expect(s.memoryBytes).toBe(2 * 2 ** 20);
    expect(s.vcpuSetup[0]!.regs).toEqual({ cr3: { table: 'long5', index: 2 }, cr0: 0x80000011n });
  });
});

describe('bad input: one line per problem naming path, value and what is allowed', () => {
  it('wrong type', () => {
    oneProblem({ ...base, vcpus: '8' }, 'vcpus', /expected a vCPU count, an integer in 1\.\.1024/, '"8"');
    oneProblem({ ...base, check: true }, 'check', /"full", "sampled", "off"/, 'true');
  });

  it('unknown key, at the top and inside an event', () => {
    oneProblem({ ...base, vpcus: 4 }, 'vpcus', /unknown key; allowed here: name, description, memoryBytes, vcpus/, '4');
    oneProblem({ ...base, events: [{ kind: 'zap-all', atMs: 1, force: true }] }, 'events[0].force', /unknown key; allowed here: kind, atMs, atOps/, 'true');
  });

  it('vCPU count out of range, and beyond the scenario limit', () => {
    oneProblem({ ...base, vcpus: 0 }, 'vcpus', /1\.\.1024/, '0');
    oneProblem({ ...base, vcpus: 2000 }, 'vcpus', /at most 1024 vCPUs in a scenario file \(the scenario limit/, '2000');
  });

  it('too many events', () => {
    const events = Array.from({ length: SCENARIO_LIMITS.events + 1 }, (_, i) => ({ kind: 'zap-all', atOps: i }));
    oneProblem({ ...base, events }, 'events', /at most 10000 events \(the scenario limit\)/, 'a list of 10001 items');
  });

  it('bad hex', () => {
    oneProblem({ ...base, vcpuSetup: [{ regs: { cr0: '80000011' } }] }, 'vcpuSetup[0].regs.cr0', /expected a hex string like "0x80050033"/, '"80000011"');
    oneProblem({ ...base, events: [{ kind: 'edit-pte', atMs: 1, gpa: '0x1000', value: '0x1234567890abcdef0' }] }, 'events[0].value', /at most 64 bits/);
    oneProblem({ ...base, events: [{ kind: 'write-cr', atMs: 1, vcpu: 0, register: 'cr4', value: 'long4:0' }] }, 'events[0].value', /hex string/, '"long4:0"');
  });

  it('unknown strategy, host and policy', () => {
    oneProblem({ ...base, strategy: 'zero-bit' }, 'strategy', /"all", "valid-bit", "level-zero", "cpuid-stale", "word-zero", "invalid-bit"/, '"zero-bit"');
    oneProblem({ ...base, host: 'intel-vmx' }, 'host', /"intel-ept", "amd-npt", "shadow"/, '"intel-vmx"');
    oneProblem({ ...base, policy: 'lenient' }, 'policy', /"strict", "legacy"/, '"lenient"');
  });

  it('unknown event kind', () => {
    oneProblem({ ...base, events: [{ kind: 'reboot', atMs: 5 }] }, 'events[0].kind', /"set-cpuid", "zap-all", "write-cr", "edit-pte", "pause", "resume"/, '"reboot"');
  });

  it('event at a negative time, after the end, with both or neither trigger', () => {
    oneProblem({ ...base, events: [{ kind: 'pause', atMs: -5 }] }, 'events[0].atMs', /in 0\.\.600000/, '-5');
    oneProblem({ ...base, durationMs: 500, events: [{ kind: 'pause', atMs: 900 }] }, 'events[0].atMs', /after the end of the run \(500 ms/, '900');
    oneProblem({ ...base, events: [{ kind: 'pause' }] }, 'events[0].atMs', /exactly one of "atMs".*"atOps"/);
    oneProblem({ ...base, events: [{ kind: 'pause', atMs: 1, atOps: 1 }] }, 'events[0].atOps', /exactly one of/);
    oneProblem({ ...base, opsBudget: 100, events: [{ kind: 'zap-all', atOps: 101 }] }, 'events[0].atOps', /beyond opsBudget \(100\)/, '101');
  });

  it('vCPU index beyond vcpus in write-cr, set-cpuid and vcpuSetup', () => {
    oneProblem({ ...base, events: [{ kind: 'write-cr', atMs: 1, vcpu: 2, register: 'cr0', value: '0x80000011' }] }, 'events[0].vcpu', /below vcpus \(2\)/, '2');
    oneProblem({ ...base, events: [{ kind: 'set-cpuid', atMs: 1, cpuid: { nx: false }, vcpus: [0, 5] }] }, 'events[0].vcpus[1]', /below vcpus \(2\)/, '5');
    oneProblem({ ...base, vcpuSetup: [{ vcpus: { from: 1, to: 3 }, cpuid: { la57: true } }] }, 'vcpuSetup[0].vcpus.to', /below vcpus/, '3');
  });

  it('memory too big, too small, not page-aligned, bad unit', () => {
    oneProblem({ ...base, memoryBytes: '2 GiB' }, 'memoryBytes', /at most 1 GiB/, '"2 GiB"');
    oneProblem({ ...base, memoryBytes: 1024 * 1024 }, 'memoryBytes', /at least 2 MiB/, '1048576');
    oneProblem({ ...base, memoryBytes: 4 * 2 ** 20 + 100 }, 'memoryBytes', /multiple of 4096/);
    oneProblem({ ...base, memoryBytes: '64 MB' }, 'memoryBytes', /units KiB, MiB, GiB/, '"64 MB"');
  });

  it('PTE address unaligned or outside guest memory', () => {
    oneProblem({ ...base, events: [{ kind: 'edit-pte', atMs: 1, gpa: '0x13004', value: '0x0' }] }, 'events[0].gpa', /8-byte aligned/, '"0x13004"');
    oneProblem({ ...base, memoryBytes: '2 MiB', events: [{ kind: 'edit-pte', atMs: 1, gpa: '0x200000', value: '0x0' }] }, 'events[0].gpa', /below the guest memory size/);
  });

  it('CPUID values out of range and missing required fields', () => {
    oneProblem({ ...base, cpuid: { maxPhyAddr: 64 } }, 'cpuid.maxPhyAddr', /MAXPHYADDR \(bits\) in 24\.\.52/, '64');
    oneProblem({ ...base, cpuid: { vendor: 'via' } }, 'cpuid.vendor', /"intel", "amd", "hygon"/, '"via"');
    oneProblem({ ...base, events: [{ kind: 'set-cpuid', atMs: 1 }] }, 'events[0].cpuid', /missing/);
    oneProblem({ vcpus: 1 }, 'name', /missing: expected a name/);
  });

  it('a cr3 table reference out of range; an all-zero mix', () => {
    oneProblem({ ...base, vcpuSetup: [{ regs: { cr3: 'long4:3' } }] }, 'vcpuSetup[0].regs.cr3', /n 0\.\.2/, '"long4:3"');
    const zero = { access: 0, toggle: 0, mode: 0, cr3: 0, invlpg: 0, smm: 0, 'nested-enter': 0, 'nested-exit': 0, hlt: 0, invalid: 0 };
    oneProblem({ ...base, mix: zero }, 'mix', /at least one operation class needs a positive weight/);
  });

  it('bad JSON syntax names line and column; an empty file says so', () => {
    const p = problems('{\n  "name": "x",\n  "vcpus": 2,,\n}');
    expect(p).toHaveLength(1);
    expect(p[0]).toMatch(/^bad\.json: not valid JSON at line 3, column \d+: /);
    expect(problems('')[0]).toMatch(/not valid JSON \(the file is empty\)/);
    expect(problems('[1, 2]')[0]).toMatch(/^bad\.json: \(top level\): expected a scenario \(a JSON object\)/);
  });

  it('several problems: one line each, all reported', () => {
    const p = problems({ name: '', vcpus: -1, strategy: 'x', events: [{ kind: 'zap-all', atMs: 'soon' }] });
    expect(p.length).toBe(4);
    expect(p.map((l) => l.split(': ')[1])).toEqual(['name', 'vcpus', 'strategy', 'events[0].atMs']);
  });

  it('files: missing, a directory, YAML', () => {
    expect(() => loadScenario('/nonexistent/x.json')).toThrow(/\/nonexistent\/x\.json: no such file/);
    expect(() => loadScenario(join(root, 'examples'))).toThrow(/is a directory/);
    expect(() => loadScenario('s.yaml')).toThrow(/YAML scenario files are not supported/);
  });
});
