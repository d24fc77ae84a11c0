/** `kvm-mmu-emu stress` as a user runs it: a child process of the built CLI. */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const CLI = join(import.meta.dirname, '../../dist/src/cli/main.js');
const run = (...args: string[]) => spawnSync(process.execPath, [CLI, 'stress', ...args], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });

describe('stress command', () => {
  it('runs, prints one row per invariant, writes a JSON report, exits 0 with no observable violation', () => {
    const dir = mkdtempSync(join(tmpdir(), 'stress-'));
    const report = join(dir, 'r.json');
    const r = run('--vcpus', '3', '--seconds', '1', '--strategy', 'valid-bit', '--policy', 'strict', '--report', report);
    expect(r.stderr + r.stdout).toMatch(/1\. fresh configuration/);
    for (const n of ['correct accesses', 'shadow sharing', 'no use after free', 'no lost invalidation', 'TLB coherence', 'no reads of invalidated roles', 'effective invalidation']) {
      expect(r.stdout).toContain(n);
    }
    expect(r.status, r.stderr + r.stdout).toBe(0);
    const doc = JSON.parse(readFileSync(report, 'utf8')) as { results: { strategy: string; invariants: { id: number; checked: number }[] }[] };
    expect(doc.results[0]!.strategy).toBe('valid-bit');
    expect(doc.results[0]!.invariants.map((i) => i.id)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  }, 120_000);

  it('a mutant that the checks catch makes it exit 1', () => {
    const r = run('--vcpus', '3', '--seconds', '2', '--strategy', 'valid-bit', '--policy', 'strict', '--mutant', 'cr4-no-reset', '--json');
    expect(r.status, r.stderr).toBe(1);
    const doc = JSON.parse(r.stdout) as { results: { invariants: { id: number; observable: number }[] }[] };
    expect(doc.results[0]!.invariants[0]!.observable).toBeGreaterThan(0);
  }, 120_000);

  it('--stop-on ends the run at the first finding of the named invariant and prints the time to detection', () => {
    const dir = mkdtempSync(join(tmpdir(), 'stress-'));
    const report = join(dir, 'r.json');
    const r = run('--vcpus', '3', '--seconds', '30', '--strategy', 'valid-bit', '--policy', 'strict', '--mutant', 'request-no-kick', '--stop-on', '5', '--report', report);
    expect(r.status, r.stderr).toBe(1);
    expect(r.stdout).toMatch(/time to detection: \d+\.\d s/);
    expect(r.stdout).toMatch(/VIOLATION: seed 1, strategy valid-bit, 3 vCPUs: .*5\. no lost invalidation/);
    const doc = JSON.parse(readFileSync(report, 'utf8')) as { results: { elapsedMs: number; detectedAtMs: number }[] };
    expect(doc.results[0]!.detectedAtMs).toBeLessThan(30_000);
    expect(doc.results[0]!.elapsedMs).toBeLessThan(30_000);
  }, 120_000);

  it.each([
    [['--check', 'bogus'], /--check: expected one of full, sampled, off, got "bogus"/],
    [['--mutant', 'nope'], /--mutant: expected one of reload-ignored/],
    [['--vcpus', '0'], /--vcpus: expected an integer in 1\.\.4096, got "0"/],
    [['--hosts', 'intel-ept,vmware'], /--hosts: expected one of intel-ept, amd-npt, shadow, got "vmware"/],
    [['--strategy', 'magic'], /strategy/],
    [['--stop-on', '9'], /--stop-on: expected an integer in 1\.\.8, got "9"/],
  ])('bad input %j exits 2 with a message and no stack trace', (args, msg) => {
    const r = run(...args);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(msg);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});
