/**
 * Reading a scenario file: JSON only (no YAML: it would need a dependency).
 * Every problem becomes one line naming the field path (`events[3].atMs`),
 * the bad value and what is allowed; a syntax error names line and column.
 * Nothing here throws anything but ScenarioError for bad input.
 */
import { readFileSync } from 'node:fs';
import type { z } from 'zod';
import { scenarioSchema, type Scenario } from './schema.js';

/** Bad scenario input (file, JSON, schema, or values a vCPU refused at setup). The CLI maps it to exit code 2. */
export class ScenarioError extends Error {
  override name = 'ScenarioError';
  constructor(
    message: string,
    /** One entry per problem, each already prefixed with the source. */
    readonly problems: readonly string[] = [message],
  ) {
    super(message);
  }
}

/** Most problems listed for one file; the rest are counted. */
export const MAX_PROBLEMS_LISTED = 20;

/** `events[3].atMs` from ['events', 3, 'atMs']. */
export function fieldPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const k of path) out += typeof k === 'number' ? `[${k}]` : out ? `.${String(k)}` : String(k);
  return out || '(top level)';
}

/** The value at `path` in the raw input, shown briefly. */
function valueAt(root: unknown, path: readonly PropertyKey[]): { found: boolean; text: string } {
  let v: unknown = root;
  for (const k of path) {
    if (v === null || typeof v !== 'object' || !(k in (v as object))) return { found: false, text: '' };
    v = (v as Record<PropertyKey, unknown>)[k];
  }
  return { found: true, text: brief(v) };
}

function brief(v: unknown): string {
  if (Array.isArray(v)) return `a list of ${v.length} item${v.length === 1 ? '' : 's'}`;
  if (v !== null && typeof v === 'object') {
    const keys = Object.keys(v);
    return `an object with keys ${keys.slice(0, 6).join(', ')}${keys.length > 6 ? ', ...' : ''}`;
  }
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 60 ? s.slice(0, 57) + '...' : s;
}

/** One line per zod issue: `source: path: what is allowed (got value)`. */
export function describeIssues(issues: readonly z.core.$ZodIssue[], raw: unknown, source: string): string[] {
  const lines: string[] = [];
  for (const iss of issues) {
    if (iss.code === 'unrecognized_keys') {
      for (const key of iss.keys) {
        const p = [...iss.path, key];
        lines.push(`${source}: ${fieldPath(p)}: ${iss.message} (got ${valueAt(raw, p).text})`);
      }
      continue;
    }
    const v = valueAt(raw, iss.path);
    lines.push(`${source}: ${fieldPath(iss.path)}: ${v.found ? `${iss.message} (got ${v.text})` : `missing: ${iss.message}`}`);
  }
  return lines;
}

/** "line L, column C" of a character offset. */
function lineColumn(text: string, pos: number): string {
  const before = text.slice(0, pos);
  const line = before.split('\n').length;
  return `line ${line}, column ${pos - before.lastIndexOf('\n')}`;
}

/** JSON.parse with the position of a syntax error as line and column. */
export function parseJsonText(text: string, source: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    const msg = (e as Error).message;
    const m = /at position (\d+)/.exec(msg);
    const where = m ? ` at ${lineColumn(text, Number(m[1]))}` : text.trim() === '' ? ' (the file is empty)' : '';
    throw new ScenarioError(`${source}: not valid JSON${where}: ${msg.replace(/ in JSON at position \d+.*$/, '')}`);
  }
}

/** Validate already-parsed JSON as a scenario. */
export function validateScenario(raw: unknown, source: string): Scenario {
  const r = scenarioSchema.safeParse(raw);
  if (r.success) return r.data;
  const lines = describeIssues(r.error.issues, raw, source);
  const listed = lines.slice(0, MAX_PROBLEMS_LISTED);
  if (lines.length > listed.length) listed.push(`${source}: ... and ${lines.length - listed.length} more problem(s)`);
  throw new ScenarioError(listed.join('\n'), listed);
}

/** Parse scenario text (JSON). */
export function parseScenario(text: string, source = 'scenario'): Scenario {
  return validateScenario(parseJsonText(text, source), source);
}

/** Read and validate a scenario file. */
export function loadScenario(path: string): Scenario {
  if (/\.ya?ml$/i.test(path)) throw new ScenarioError(`${path}: YAML scenario files are not supported; write the scenario as JSON (docs/scenarios.md)`);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new ScenarioError(`${path}: no such file`);
    if (code === 'EISDIR') throw new ScenarioError(`${path}: is a directory, expected a JSON scenario file`);
    throw new ScenarioError(`${path}: cannot read (${(e as Error).message})`);
  }
  return parseScenario(text, path);
}
