/**
 * Writing an export without holding it in memory: exporters yield string
 * chunks; a file sink batches them into ~1 MiB writes. A trace of every
 * ring at full capacity is hundreds of MiB of text, so nothing builds it as
 * one string except `joinChunks`, meant for tests and small traces.
 */
import { closeSync, openSync, writeSync } from 'node:fs';

const FLUSH_CHARS = 1 << 20;

/** Write `chunks` to `path` (created or truncated); returns characters written. */
export function writeChunks(path: string, chunks: Iterable<string>): number {
  const fd = openSync(path, 'w');
  let pending: string[] = [];
  let size = 0;
  let total = 0;
  try {
    for (const c of chunks) {
      pending.push(c);
      size += c.length;
      if (size >= FLUSH_CHARS) {
        writeSync(fd, pending.join(''));
        total += size;
        pending = [];
        size = 0;
      }
    }
    if (size) writeSync(fd, pending.join(''));
    return total + size;
  } finally {
    closeSync(fd);
  }
}

export const joinChunks = (chunks: Iterable<string>): string => Array.from(chunks).join('');
