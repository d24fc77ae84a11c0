/**
 * comlink's Node adapter, typed. The adapter ships as a UMD/CommonJS module
 * whose export *is* the function; under ESM it arrives as the default export.
 */
import type { Endpoint } from 'comlink';
import * as adapter from 'comlink/dist/umd/node-adapter.js';
import type { MessagePort } from 'node:worker_threads';

type NodeEndpointFn = (port: MessagePort) => Endpoint;
const mod = adapter as unknown as NodeEndpointFn | { default: NodeEndpointFn };

/** Wrap a worker_threads MessagePort as a comlink endpoint. */
export const nodeEndpoint: NodeEndpointFn = typeof mod === 'function' ? mod : mod.default;
