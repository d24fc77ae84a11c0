/**
 * The CLI as a user runs it: a child process per command, checking output and
 * exit codes (0 ok, 2 usage or input error), including many kinds of bad input.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it, onTestFinished } from 'vitest';

const root = fileURLToPath(new URL('../..', import.meta.url));
const cli = join(root, 'dist/src/cli/main.js');

function run(args: string[], input?: string) {
  const r = spawnSync(process.execPath, [cli, ...args], { cwd: root, input, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

beforeAll(() => {
  if (!existsSync(cli)) {
    const r = spawnSync('npx', ['tsc', '-p', '.'], { cwd: root, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`build failed: ${r.stdout}${r.stderr}`);
  }
});

describe('kvm-mmu-emu CLI', () => {
  it('--help lists the commands', () => {
    const r = run(['--help']);
    expect(r.code).toBe(0);
    for (const c of ['run', 'role']) expect(r.out).toContain(c);
  });

  it('role --help and role compute --help show examples', () => {
    expect(run(['role', '--help']).out).toMatch(/compute|replay|decode/);
    const r = run(['role', 'compute', '--help']);
    expect(r.code).toBe(0);
    expect(r.out).toContain('Examples:');
  });

  it('role decode prints every field and the kvmmmu notation', () => {
    const r = run(['role', 'decode', '0x00003784', '--ext', '0x28d']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/level\s+4/);
    expect(r.out).toMatch(/efer_lma\s+1/);
    expect(r.out).toContain('kvmmmu: l4 8-byte q0 direct wux nxe ad');
  });

  it('role decode --json in the level-zero layout', () => {
    const r = run(['role', 'decode', '0x20780', '--ext', '0x1', '--strategy', 'level-zero', '--json']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out);
    expect(j.extLayout).toBe('no-valid');
    expect(j.extFields.execonly).toBe(1);
    expect(j.baseFields.guest_mode).toBe(1);
  });

  it('role compute reads a file and stdin and prints one JSON result per state', () => {
    const a = run(['role', 'compute', 'examples/role-states.json']);
    expect(a.code).toBe(0);
    const results = JSON.parse(a.out);
    expect(results).toHaveLength(6);
    expect(results[0].base).toBe('0x00020784');
    const b = run(['role', 'compute', '-'], JSON.stringify([require0()]));
    expect(b.code).toBe(0);
    expect(JSON.parse(b.out)).toMatchObject([{ rootLevel: 0, shadowZeroCheck: null, newPgdRole: null, gvaToGpa: 'nonpaging' }]);
  });

  it('role replay runs a sequence under a strategy', () => {
    const r = run(['role', 'replay', 'examples/role-sequence.json', '--strategy', 'level-zero']);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.out);
    expect(out[4]).toMatchObject({ mmu: 'nested', skipped: true });
  });

  it('run --in-thread compares the five strategies and ends with a conclusion line', () => {
    const r = run(['run', '--in-thread', '--ops', '300', '--vcpus', '3']);
    expect(r.code).toBe(0);
    for (const s of ['valid-bit', 'level-zero', 'cpuid-stale', 'word-zero', 'invalid-bit']) expect(r.out).toContain(s);
    expect(r.out.trim().split('\n').at(-1)).toMatch(/observabl/);
  });

  it('run --in-thread --json is machine-readable', () => {
    const r = run(['run', '--in-thread', '--ops', '200', '--vcpus', '2', '--strategy', 'word-zero', '--json']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out);
    expect(j.results).toHaveLength(1);
    expect(j.results[0].strategy).toBe('word-zero');
    expect(j.results[0].stats.guestOps).toBe(400);
  });

  it('run (threaded) runs vCPU worker threads and reports their counters', () => {
    const r = run(['run', '--strategy', 'valid-bit', '--vcpus', '3', '--seconds', '1', '--json']);
    expect(r.code, r.err).toBe(0);
    const j = JSON.parse(r.out);
    expect(j.results[0].stats.guestOps).toBeGreaterThan(0);
    expect(j.results[0].stats.cpuidApplied).toBeGreaterThan(0);
    expect(j.conclusion).toMatch(/observabl/);
  });

  it('run --trace/--ftrace writes, per host-flavour VM, a valid trace-event JSON file and kvmmmu ftrace text', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvm-mmu-emu-trace-'));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const r = run(['run', '--strategy', 'valid-bit', '--seconds', '1', '--vcpus', '3', '--trace', join(dir, 't.json'), '--ftrace', join(dir, 't.txt')]);
    expect(r.code, r.err).toBe(0);
    // The default scenario's three host flavours are three VMs: one file each, named FILE.STRATEGY.FLAVOUR.EXT.
    for (const flavour of ['intel-ept', 'amd-npt', 'shadow']) {
      const path = join(dir, `t.valid-bit.${flavour}.json`);
      expect(r.err).toContain(`trace written: ${path}`);
      const j = JSON.parse(readFileSync(path, 'utf8'));
      expect(j.otherData).toMatchObject({ strategy: 'valid-bit', flavour, vcpus: 1 });
      expect(j.traceEvents.length).toBeGreaterThan(10);
      const bad: string[] = [];
      for (const e of j.traceEvents) {
        const ok =
          typeof e.name === 'string' && e.name !== '' && typeof e.ph === 'string' && typeof e.ts === 'number' && e.ts >= 0 && Number.isInteger(e.pid) && Number.isInteger(e.tid) &&
          (e.ph === 'X' ? typeof e.dur === 'number' && e.dur >= 0 : e.ph === 'i' ? ['t', 'p', 'g'].includes(e.s) : e.ph === 'C' ? typeof e.args === 'object' && Object.values(e.args).every((v) => typeof v === 'number') : e.ph === 'M');
        if (!ok && bad.length < 5) bad.push(JSON.stringify(e));
      }
      expect(bad, flavour).toEqual([]);
      const names = new Set(j.traceEvents.map((e: { tid: number; name: string }) => `${e.tid} ${e.name.split(' ')[0]}`));
      for (const n of ['0 broadcast', '0 shadow-pages', '1 guest', '1 mmu-init', '1 kvm_mmu_get_page']) expect(names, `${flavour}: ${n}`).toContain(n);
      expect(readFileSync(join(dir, `t.valid-bit.${flavour}.txt`), 'utf8')).toMatch(/^ +vcpu-0-4001 +\[000\] \.\.\.1\. +\d+\.\d{6}: kvm_mmu_get_page: /m);
    }
    // The ring size needs a trace to fill; traces need the threaded run.
    const lone = run(['run', '--trace-events', '1000']);
    expect([lone.code, lone.err]).toEqual([2, expect.stringMatching(/--trace-events: only with --trace or --ftrace/)]);
    const inThread = run(['run', '--in-thread', '--trace', join(dir, 'x.json')]);
    expect([inThread.code, inThread.err]).toEqual([2, expect.stringMatching(/--trace: .*drop --in-thread/)]);
  });
});

function require0() {
  return {
    path: 'nested', cr0: '0x11', cr4: '0x0', efer: '0x0', smm: false, guestMode: true,
    cpuid: { vendor: 'intel', maxPhyAddr: 46, gbpages: true, pse36: true, pku: false, la57: false, smep: false, smap: false, nx: true },
    host: { tdpEnabled: true, maxTdpLevel: 4, vendor: 'intel', tdpForcedRootLevel: 0, adDisabled: false, gbpages: true, physBits: 46, maxHugePageLevel: 3 },
  };
}

describe('bad input: exit code 2, a message naming what is wrong, never a stack trace', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kvm-mmu-emu-cli-'));
  const file = (name: string, text: string) => {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  };
  const state = require0();
  const cases: [string, () => string[], RegExp, string?][] = [
    ['unknown command', () => ['frobnicate'], /unknown command/],
    ['unknown option', () => ['run', '--bogus'], /unknown option/],
    ['unknown strategy', () => ['role', 'compute', '--strategy', 'nope', 'examples/role-states.json'], /--strategy: unknown strategy "nope"/],
    ['missing file', () => ['role', 'compute', join(dir, 'absent.json')], /no such file/],
    ['a directory', () => ['role', 'compute', dir], /is a directory/],
    ['invalid JSON', () => ['role', 'compute', file('bad.json', '[{')], /not valid JSON/],
    ['unknown path', () => ['role', 'compute', file('p.json', JSON.stringify([state, { ...state, path: 'ept' }]))], /state 1: path: expected one of/],
    ['MAXPHYADDR out of range', () => ['role', 'compute', file('m.json', JSON.stringify([{ ...state, cpuid: { ...state.cpuid, maxPhyAddr: 23 } }]))], /state 0: cpuid\.maxPhyAddr: expected an integer in 24\.\.52 \(got 23\)/],
    ['missing field', () => ['role', 'compute', file('f.json', JSON.stringify([{ ...state, efer: undefined }]))], /state 0: efer: required field is missing/],
    ['bad decode word', () => ['role', 'decode', 'xyz'], /HEX: expected a 32-bit hex word/],
    ['bad --ext word', () => ['role', 'decode', '0x1', '--ext', '0x123456789'], /--ext: expected a 32-bit hex word/],
    ['replay without steps', () => ['role', 'replay', file('r.json', JSON.stringify({ host: state.host, cpuid: state.cpuid }))], /sequence: steps: required field is missing/],
    ['run --vcpus 0', () => ['run', '--vcpus', '0'], /--vcpus: expected an integer in 1\.\./],
    ['replay with no file', () => ['role', 'replay'], /missing required argument/],
  ];
  for (const [what, args, msg] of cases) {
    it(what, () => {
      const r = run(args());
      expect(r.code).toBe(2);
      expect(r.err).toMatch(msg);
      expect(r.err).not.toMatch(/\n\s+at /);
    });
  }
});
