// Plain-JavaScript entry for the shadow-cache vCPU worker: Node 20 does not
// apply `--import tsx` to a worker's entry module, so load the TypeScript
// body through tsx's API instead. Thin by design.
import { tsImport } from 'tsx/esm/api';

await tsImport('./vcpu.worker.ts', import.meta.url);
