// Plain-JavaScript entry for the trace writer worker: Node 20 does not apply
// `--import tsx` to a worker's entry module, so load the TypeScript body
// through tsx's API (as test/shadow/vcpu.worker.mjs does). Thin by design.
import { tsImport } from 'tsx/esm/api';

await tsImport('./trace.worker.ts', import.meta.url);
