/** Where the traces of one VM of a multi-VM run go. */
import { extname } from 'node:path';

/** FILE with `.STRATEGY.FLAVOUR` before its extension (`t.json` → `t.valid-bit.intel-ept.json`). */
export function traceFileName(file: string, strategy: string, flavour: string): string {
  const ext = extname(file);
  return `${file.slice(0, file.length - ext.length)}.${strategy}.${flavour}${ext}`;
}
