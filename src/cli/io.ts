/**
 * CLI input and output helpers: reading JSON from a file or stdin with errors
 * a user can act on, and the error type that maps to exit code 2.
 */
import { readFileSync } from 'node:fs';

/** Exit codes, documented in the README. */
export const EXIT = { OK: 0, VIOLATION: 1, USAGE: 2 } as const;

/** A usage or input error: printed without a stack trace, exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** Read a whole file, or stdin for `-` / no argument. */
export function readInput(file: string | undefined): string {
  const name = file === undefined || file === '-' ? '/dev/stdin' : file;
  try {
    return readFileSync(name === '/dev/stdin' ? 0 : name, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new UsageError(`${file}: no such file`);
    if (code === 'EISDIR') throw new UsageError(`${file}: is a directory, expected a JSON file`);
    throw new UsageError(`${file ?? 'stdin'}: cannot read (${(e as Error).message})`);
  }
}

/** Parse JSON, naming the source and the position of a syntax error. */
export function parseJson(text: string, source: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new UsageError(`${source}: not valid JSON: ${(e as Error).message}`);
  }
}

export const readJson = (file: string | undefined): unknown => parseJson(readInput(file), file && file !== '-' ? file : 'stdin');

/** A JSON array printed one element per line: parseable, diffable, greppable. */
export function jsonLines(items: readonly unknown[]): string {
  if (items.length === 0) return '[]';
  return '[\n' + items.map((x) => JSON.stringify(x)).join(',\n') + '\n]';
}

/** Colors only on a terminal and never with NO_COLOR. */
export const useColor = (stream: NodeJS.WriteStream = process.stdout): boolean =>
  !!stream.isTTY && !('NO_COLOR' in process.env) && process.env.TERM !== 'dumb';
