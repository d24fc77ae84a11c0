/** `kvm-mmu-emu sim` as a user runs it: a child process of the built CLI. */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const CLI = join(import.meta.dirname, '../../dist/src/cli/main.js');
const run = (...args: string[]) => spawnSync(process.execPath, [CLI, 'sim', ...args], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });

describe('sim command', () => {
  it('runs a schedule, prints its event trace and a replay token that reproduces the same output', () => {
    const a = run('--steps', '2000', '--tail', '30');
    expect(a.status, a.stderr).toBe(0);
    const token = /replay: kvm-mmu-emu sim --replay (\S+)/.exec(a.stdout)?.[1];
    expect(token).toMatch(/^sim2:valid-bit:shadow:3:1:random:2000:-:50$/);
    const b = run('--replay', token!, '--tail', '30');
    expect(b.status).toBe(0);
    expect(b.stdout).toBe(a.stdout);
  });

  it('a mutant is caught: exit 1, the violation, a replay token and a shrunk one', () => {
    const r = run('--mutant', 'zap-no-wait', '--schedules', '10', '--shrink', '--tail', '0');
    expect(r.status, r.stderr).toBe(1);
    expect(r.stdout).toMatch(/VIOLATION at step \d+: no-lost-invalidation/);
    expect(r.stdout).toMatch(/replay: kvm-mmu-emu sim --replay sim2:valid-bit:shadow:3:\d+:random:\d+:zap-no-wait:50/);
    expect(r.stdout).toMatch(/shrunk: |shrink: nothing smaller fails/);
  });

  it.each([
    [['--replay', 'sim2:valid-bit'], /replay token: expected sim2:/],
    [['--replay', 'sim2:valid-bit:shadow:3:1:random:10:bogus:50'], /unknown mutant "bogus"/],
    [['--replay', 'sim1:valid-bit:shadow:1:1:random:337:zap-no-wait:50'], /was recorded by an older scheduler \(sim1\)/],
    [['--scheduler', 'fifo'], /--scheduler: scheduler must be "random" or "pctD"/],
    [['--host', 'xen'], /--host: expected one of intel-ept, amd-npt, shadow, got "xen"/],
    [['--vcpus', '65'], /--vcpus: expected an integer in 1\.\.64, got "65"/],
  ])('bad input %j exits 2 with a message and no stack trace', (args, msg) => {
    const r = run(...args);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(msg);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});
