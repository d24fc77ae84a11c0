/**
 * Plain-text summary of what a scenario's events did, per strategy: counts
 * by outcome and the first events that were refused, failed or not reached.
 * The table of counters itself is the default run's (src/cli/run.ts).
 */
import type { EventResult } from './events.js';
import type { ScenarioRow } from './runner.js';

const ORDER: EventResult[] = ['ok', 'refused', 'failed', 'not-reached'];

export function eventSummary(rows: readonly ScenarioRow[], detailsPerRow = 3): string[] {
  const out: string[] = [];
  for (const r of rows) {
    if (r.events.length === 0) continue;
    const counts = ORDER.map((k) => [k, r.events.filter((e) => e.result === k).length] as const).filter(([, n]) => n > 0);
    out.push(`events under ${r.strategy}: ${counts.map(([k, n]) => `${n} ${k}`).join(', ')}`);
    const multiHost = r.hosts.length > 1;
    for (const e of r.events.filter((x) => x.result !== 'ok').slice(0, detailsPerRow)) {
      out.push(`  events[${e.index}] ${e.kind}${multiHost ? ` on ${e.host}` : ''}: ${e.result}: ${e.detail}`);
    }
  }
  for (const r of rows) for (const [who, why] of Object.entries(r.dead)) out.push(`  [${r.strategy}] vCPU ${who} died: ${why}`);
  return out;
}
