/**
 * A profiling driver for the broadcast path (not a benchmark group): one VM,
 * one protocol, many rounds and nothing else, with the V8 CPU profiler on
 * the coordinator and on every vCPU worker (through the inspector's
 * NodeWorker domain: piscina starts the workers without the parent's
 * --cpu-prof). Usage, after `npm run build`:
 *
 *   node dist/bench/profile-broadcast.js [--n 16] [--mode idle|busy]
 *     [--protocol shm|limit|rpc] [--rounds 3000]
 *     [--profile all|coordinator|none] [--interval 100] [--out DIR]
 *
 * (--interval: sampling interval in µs). Prints the latency p50 / p99, the
 * CPU time per broadcast (the process, and on Linux the coordinator thread
 * apart from the others), and the functions with the most self time on the
 * coordinator and summed over the vCPU threads; with DIR it
 * also writes coordinator.cpuprofile and vcpu-<k>.cpuprofile there (open
 * them in Chrome DevTools or speedscope). `node --cpu-prof` on this script
 * profiles the coordinator alone the usual way.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { basename, join } from 'node:path';
import { cpuUsage } from 'node:process';
import { parseArgs } from 'node:util';
import { DEFAULT_CPUID } from '../src/cpuid/cpuid.js';
import { Vm } from '../src/vm/vm.js';
import { quantile } from './harness.js';
import { IDLE_MIX, LOAD_MODES, type LoadMode } from './reset-broadcast.js';

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Self time (µs) per function (name file:line) of a profile. */
export function selfTimes(p: CpuProfile, into = new Map<string, number>()): Map<string, number> {
  const label = new Map(p.nodes.map((n) => [n.id, `${n.callFrame.functionName || '(anonymous)'} ${n.callFrame.url ? `${basename(n.callFrame.url)}:${n.callFrame.lineNumber + 1}` : ''}`.trim()]));
  p.samples.forEach((id, i) => {
    const k = label.get(id)!;
    // A sample's time is the gap to the next one (the last gets the mean gap).
    const dt = p.timeDeltas[i + 1] ?? (p.endTime - p.startTime) / Math.max(1, p.samples.length);
    into.set(k, (into.get(k) ?? 0) + dt);
  });
  return into;
}

function top(times: Map<string, number>, wallUs: number, k = 14): string {
  return [...times.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, k)
    .map(([name, us]) => `  ${(us / 1000).toFixed(1).padStart(9)} ms ${((us / wallUs) * 100).toFixed(1).padStart(5)}%  ${name}`)
    .join('\n');
}

/** The profiler on this thread and on every worker thread, started and stopped together. */
class Profilers {
  private readonly session = new Session();
  private readonly workers: string[] = [];
  private nextId = 0;
  private readonly pending = new Map<number, (m: { result?: unknown; error?: { message: string } }) => void>();

  async attach(workers: boolean): Promise<void> {
    const s = this.session;
    s.connect();
    if (!workers) return;
    s.on('NodeWorker.attachedToWorker', (m) => this.workers.push((m.params as { sessionId: string }).sessionId));
    s.on('NodeWorker.receivedMessageFromWorker', (m) => {
      const msg = JSON.parse((m.params as { message: string }).message) as { id?: number };
      if (msg.id !== undefined) this.pending.get(msg.id)?.(msg as { result?: unknown; error?: { message: string } });
    });
    await s.post('NodeWorker.enable', { waitForDebuggerOnStart: false });
  }

  private toWorker(sessionId: string, method: string, params: object = {}): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const id = ++this.nextId;
      this.pending.set(id, (m) => {
        this.pending.delete(id);
        if (m.error) reject(new Error(`${method}: ${m.error.message}`));
        else resolve(m.result);
      });
      void this.session.post('NodeWorker.sendMessageToWorker', { sessionId, message: JSON.stringify({ id, method, params }) });
    });
  }

  get workerCount(): number {
    return this.workers.length;
  }

  async start(intervalUs: number): Promise<void> {
    for (const w of this.workers) {
      await this.toWorker(w, 'Profiler.enable');
      await this.toWorker(w, 'Profiler.setSamplingInterval', { interval: intervalUs });
    }
    await this.session.post('Profiler.enable');
    await this.session.post('Profiler.setSamplingInterval', { interval: intervalUs });
    await Promise.all(this.workers.map((w) => this.toWorker(w, 'Profiler.start')));
    await this.session.post('Profiler.start');
  }

  async stop(): Promise<{ main: CpuProfile; workers: CpuProfile[] }> {
    const main = ((await this.session.post('Profiler.stop')) as { profile: CpuProfile }).profile;
    const workers: CpuProfile[] = [];
    for (const w of this.workers) workers.push(((await this.toWorker(w, 'Profiler.stop')) as { profile: CpuProfile }).profile);
    this.session.disconnect();
    return { main, workers };
  }
}

const USAGE = 'usage: profile-broadcast.js [--n N] [--mode idle|busy] [--protocol shm|limit|rpc] [--rounds R] [--profile all|coordinator|none] [--interval US] [--out DIR]';
const PROFILE = ['all', 'coordinator', 'none'] as const;

/** CPU time (µs) this thread (the coordinator) has used, from /proc (Linux); null elsewhere. */
function coordinatorCpuUs(): number | null {
  try {
    const stat = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime (fields 14 and 15 of stat), in clock ticks of 10 ms on Linux.
    return (Number(f[11]) + Number(f[12])) * 10_000;
  } catch {
    return null;
  }
}

function parse(argv: string[]) {
  const { values } = parseArgs({
    args: argv,
    options: {
      n: { type: 'string', default: '16' },
      mode: { type: 'string', default: 'idle' },
      protocol: { type: 'string', default: 'shm' },
      rounds: { type: 'string', default: '3000' },
      profile: { type: 'string', default: 'all' },
      interval: { type: 'string', default: '100' },
      out: { type: 'string' },
    },
  });
  const o = {
    n: Number(values.n),
    mode: values.mode as LoadMode,
    protocol: values.protocol!,
    rounds: Number(values.rounds),
    profile: values.profile as (typeof PROFILE)[number],
    interval: Number(values.interval),
    dir: values.out,
  };
  const ok = Number.isInteger(o.n) && o.n >= 1 && LOAD_MODES.includes(o.mode) && ['shm', 'limit', 'rpc'].includes(o.protocol) && o.rounds > 0 && PROFILE.includes(o.profile) && o.interval > 0;
  if (!ok) throw new RangeError(USAGE);
  return o;
}

async function main(argv: string[]): Promise<void> {
  const { n, mode, protocol, rounds, profile, interval, dir } = parse(argv);
  const profilers = profile === 'none' ? null : new Profilers();
  await profilers?.attach(profile === 'all');
  const vm = await Vm.create({ vcpus: n, policy: 'legacy', deadlineMs: 120_000, ...(mode === 'idle' ? { mix: IDLE_MIX, loop: { haltTimeoutMs: Infinity } } : {}) });
  const tables = [{ ...DEFAULT_CPUID, maxPhyAddr: DEFAULT_CPUID.maxPhyAddr - 1 }, DEFAULT_CPUID];
  const once = async (r: number): Promise<void> => {
    if (protocol === 'shm') await vm.broadcastCpuid(tables[r % 2]!);
    else if (protocol === 'rpc') await vm.setCpuidViaRpc(tables[r % 2]!);
    else await vm.ping();
  };
  try {
    for (let r = 0; r < Math.min(200, rounds); r++) await once(r); // warm-up, not profiled
    await profilers?.start(interval);
    const lat: number[] = [];
    const cpu0 = cpuUsage();
    const coord0 = coordinatorCpuUs();
    const t0 = performance.now();
    for (let r = 0; r < rounds; r++) {
      const t = performance.now();
      await once(r);
      lat.push(performance.now() - t);
    }
    const wall = performance.now() - t0;
    const cpu = cpuUsage(cpu0);
    const coord1 = coordinatorCpuUs();
    const prof = await profilers?.stop();
    lat.sort((a, b) => a - b);
    const perBroadcast = (us: number): string => `${(us / rounds).toFixed(0)} µs`;
    const total = cpu.user + cpu.system;
    const coord = coord0 === null || coord1 === null ? null : coord1 - coord0;
    const out = [
      `${protocol} ${mode} N=${n}, ${rounds} broadcasts in ${(wall / 1000).toFixed(2)} s (profiler: ${profile}${profile === 'none' ? '' : `, ${interval} µs sampling`}): p50 ${(quantile(lat, 0.5) * 1000).toFixed(1)} µs, p99 ${(quantile(lat, 0.99) * 1000).toFixed(1)} µs`,
      `CPU per broadcast: process ${perBroadcast(total)} (${(total / 1000 / wall).toFixed(2)} cores busy)` +
        (coord === null ? '' : `, coordinator thread ${perBroadcast(coord)}, other threads ${perBroadcast(total - coord)} (${(((total - coord) / rounds) / n).toFixed(1)} µs per vCPU)`) +
        `; vCPU 0 applied ${vm.vcpuStats(0).cpuidApplied} CPUID changes`,
    ];
    if (prof) {
      out.push(`coordinator, self time (of ${(wall / 1000).toFixed(2)} s wall):`, top(selfTimes(prof.main), wall * 1000));
      if (prof.workers.length) {
        const summed = prof.workers.reduce((acc, p) => selfTimes(p, acc), new Map<string, number>());
        out.push(`${prof.workers.length} vCPU threads, self time summed (of ${((wall * prof.workers.length) / 1000).toFixed(2)} thread-seconds):`, top(summed, wall * 1000 * prof.workers.length));
      }
    }
    process.stdout.write(out.join('\n') + '\n');
    if (dir && prof) {
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'coordinator.cpuprofile'), JSON.stringify(prof.main));
      prof.workers.forEach((p, k) => writeFileSync(join(dir, `vcpu-${k}.cpuprofile`), JSON.stringify(p)));
      process.stdout.write(`wrote ${1 + prof.workers.length} profiles to ${dir}\n`);
    }
  } finally {
    await vm.destroy();
  }
}

await main(process.argv.slice(2));
