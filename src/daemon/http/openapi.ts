// The HTTP API as an OpenAPI 3.1 document, served at GET /openapi.json. Request bodies and query
// strings are generated from the same zod schemas the routes parse with, and a test checks that
// this table and the server's routes are the same set, so the document cannot drift from the code.
import { z } from 'zod';
import { ERROR_STATUS } from '../../errors.ts';
import { VERSION } from '../../version.ts';
import {
  createSandboxBody, deleteFileQuery, execBody, getFileQuery, pathQuery, processOutputQuery, processSignalBody, processStdinBody,
  processWaitQuery, putFileQuery, sandboxTimeoutBody,
} from './schemas.ts';

interface Operation {
  method: 'get' | 'post' | 'put' | 'delete';
  path: string;
  summary: string;
  body?: z.ZodType;
  rawBody?: boolean;
  query?: z.ZodObject;
  ok: number;
}

export const OPERATIONS: Operation[] = [
  { method: 'get', path: '/', summary: 'Daemon info: version, backend and why it was chosen, packs, snapshots, pool', ok: 200 },
  { method: 'get', path: '/openapi.json', summary: 'This document', ok: 200 },
  { method: 'get', path: '/metrics', summary: 'Prometheus metrics, text format (docs/metrics.md)', ok: 200 },
  { method: 'get', path: '/packs', summary: 'Language packs: description, size, sha256, interpreter, snapshot state; broken ones with the reason', ok: 200 },
  { method: 'post', path: '/sandboxes', summary: 'Boot a sandbox; answers once the guest serves', body: createSandboxBody, ok: 201 },
  { method: 'get', path: '/sandboxes', summary: 'List sandboxes', ok: 200 },
  { method: 'get', path: '/sandboxes/{id}', summary: 'One sandbox: state, backend, VMM pid, boot log tail', ok: 200 },
  { method: 'delete', path: '/sandboxes/{id}', summary: 'Destroy a sandbox', ok: 204 },
  { method: 'post', path: '/sandboxes/{id}/timeout', summary: 'Reset the sandbox\'s deadline to now + timeout_s', body: sandboxTimeoutBody, ok: 200 },
  { method: 'post', path: '/sandboxes/{id}/exec', summary: 'Run code or a program (buffered, NDJSON-streamed, in a session, or in the background)', body: execBody, ok: 200 },
  { method: 'get', path: '/sandboxes/{id}/processes', summary: 'List background processes', ok: 200 },
  { method: 'get', path: '/sandboxes/{id}/processes/{pid}', summary: 'One background process', ok: 200 },
  { method: 'get', path: '/sandboxes/{id}/processes/{pid}/output', summary: 'Buffered output from an offset', query: processOutputQuery, ok: 200 },
  { method: 'post', path: '/sandboxes/{id}/processes/{pid}/stdin', summary: 'Write to or close stdin', body: processStdinBody, ok: 204 },
  { method: 'post', path: '/sandboxes/{id}/processes/{pid}/signal', summary: 'Signal the process group', body: processSignalBody, ok: 204 },
  { method: 'get', path: '/sandboxes/{id}/processes/{pid}/wait', summary: 'Wait for exit, up to timeout_ms', query: processWaitQuery, ok: 200 },
  { method: 'delete', path: '/sandboxes/{id}/processes/{pid}', summary: 'Kill if running, and forget', ok: 204 },
  { method: 'put', path: '/sandboxes/{id}/files', summary: 'Upload a file (raw body), or a tar stream into a directory', query: putFileQuery, rawBody: true, ok: 201 },
  { method: 'get', path: '/sandboxes/{id}/files', summary: 'Download a file, or a directory as tar', query: getFileQuery, ok: 200 },
  { method: 'delete', path: '/sandboxes/{id}/files', summary: 'Delete a file or directory', query: deleteFileQuery, ok: 204 },
  { method: 'get', path: '/sandboxes/{id}/files/stat', summary: 'Stat a path', query: pathQuery, ok: 200 },
  { method: 'get', path: '/sandboxes/{id}/files/list', summary: 'List a directory', query: pathQuery, ok: 200 },
  { method: 'get', path: '/sandboxes/{id}/sessions', summary: 'List interpreter sessions', ok: 200 },
  { method: 'delete', path: '/sandboxes/{id}/sessions/{name}', summary: 'End a session', ok: 204 },
  { method: 'post', path: '/mcp', summary: 'MCP over Streamable HTTP (JSON-RPC; both protocol eras; docs/mcp.md)', ok: 200 },
  { method: 'get', path: '/mcp', summary: 'MCP: no standalone stream (stateless server): 405', ok: 405 },
  { method: 'delete', path: '/mcp', summary: 'MCP: no session to end (stateless server): 405', ok: 405 },
];

const jsonSchema = (s: z.ZodType) => z.toJSONSchema(s, { io: 'input', unrepresentable: 'any' });

export function openApiDocument(): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  const errorCodes = Object.keys(ERROR_STATUS);
  for (const op of OPERATIONS) {
    const params = [...op.path.matchAll(/\{(\w+)\}/g)].map((m) => ({ name: m[1], in: 'path', required: true, schema: { type: 'string' } }));
    const query = op.query ? Object.entries((jsonSchema(op.query) as { properties?: Record<string, unknown> }).properties ?? {})
      .map(([name, schema]) => ({ name, in: 'query', required: false, schema })) : [];
    (paths[op.path] ??= {})[op.method] = {
      summary: op.summary,
      ...(params.length || query.length ? { parameters: [...params, ...query] } : {}),
      ...(op.body ? { requestBody: { required: false, content: { 'application/json': { schema: jsonSchema(op.body) } } } } : {}),
      ...(op.rawBody ? { requestBody: { required: true, content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } } } } : {}),
      responses: {
        [String(op.ok)]: { description: 'success (shapes in docs/api.md)' },
        default: { description: 'error', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } },
      },
    };
  }
  return {
    openapi: '3.1.0',
    info: { title: 'emberd', version: VERSION, description: 'Local-first microVM sandboxes for AI-agent tool calls. Prose reference: docs/api.md.' },
    paths,
    components: {
      schemas: {
        Error: {
          type: 'object',
          required: ['error'],
          properties: { error: { type: 'object', required: ['code', 'message'], properties: { code: { type: 'string', enum: errorCodes }, message: { type: 'string' } } } },
        },
      },
    },
  };
}
