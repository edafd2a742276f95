// Firecracker's official API description (swagger 2.0, copied verbatim into ./spec) turned into
// request validators: one per (method, path template), built with ajv from the body schemas.
//
// Two strictness levels:
//  - 'spec': the swagger schemas plus `additionalProperties: false` on every object schema that
//    lists its properties (Firecracker deserialises with serde's deny_unknown_fields, so an unknown
//    field is a 400 even though the swagger text does not say so).
//  - 'firecracker': additionally, integers without a `minimum` must be >= 0 (Firecracker's fields
//    are Rust unsigned integers: a negative number fails deserialisation). The test double uses this.
// Response bodies are checked leniently (unknown fields allowed): a newer Firecracker may add some.
import { readFileSync } from 'node:fs';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { parse as parseYaml } from 'yaml';

export const SPEC_FILES = {
  '1.15.1': new URL('./spec/firecracker-api-1.15.1.yaml', import.meta.url),
  '1.16.1': new URL('./spec/firecracker-api-1.16.1.yaml', import.meta.url),
} as const;
export type SpecVersion = keyof typeof SPEC_FILES;
export const SPEC_VERSIONS = Object.keys(SPEC_FILES) as SpecVersion[];

export type Strictness = 'spec' | 'firecracker';

export interface ApiRequest {
  method: string;
  /** Request target, e.g. `/drives/pack`; a query string is ignored. */
  path: string;
  /** Parsed JSON body; undefined when the request has none. */
  body?: unknown;
}

export type Validation = { ok: true; operationId: string } | { ok: false; errors: string[] };

interface Operation {
  method: string;
  template: string;
  operationId: string;
  regex: RegExp;
  body?: { required: boolean; validate: ValidateFunction };
  responses: Map<string, ValidateFunction>;
}

type Json = Record<string, unknown>;

const isObj = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const METHODS = ['get', 'put', 'patch', 'post', 'delete'];

/**
 * Swagger 2.0 schema -> JSON Schema (draft-07) as ajv wants it. `$ref`s are pointed at the
 * registered definitions document; swagger-only keywords (`example`, `x-*`) are dropped; the
 * formats swagger uses for integer width are kept (registered below); any other `format` is
 * dropped (Firecracker's spec puts a regex in one, for the MMDS IPv4 address, which its code
 * checks itself).
 */
function convert(schema: unknown, refBase: string, request: boolean, strictness: Strictness): unknown {
  if (Array.isArray(schema)) return schema.map((s) => convert(s, refBase, request, strictness));
  if (!isObj(schema)) return schema;
  const out: Json = {};
  for (const [k, v] of Object.entries(schema)) {
    if (k === 'example' || k.startsWith('x-')) continue;
    if (k === '$ref' && typeof v === 'string') { out.$ref = v.replace(/^#\/definitions\//, `${refBase}#/definitions/`); continue; }
    if (k === 'format' && v !== 'int32' && v !== 'int64') continue;
    if (k === 'properties' && isObj(v)) {
      out.properties = Object.fromEntries(Object.entries(v).map(([p, s]) => [p, convert(s, refBase, request, strictness)]));
      continue;
    }
    out[k] = convert(v, refBase, request, strictness);
  }
  if (request && isObj(schema.properties) && !('additionalProperties' in schema)) out.additionalProperties = false;
  if (request && strictness === 'firecracker' && schema.type === 'integer' && !('minimum' in schema)) out.minimum = 0;
  return out;
}

function describeError(e: ErrorObject): string {
  const where = e.instancePath || '(body)';
  if (e.keyword === 'additionalProperties') return `${where}: unknown field "${String(e.params.additionalProperty)}"`;
  if (e.keyword === 'required') return `${where}: missing required field "${String(e.params.missingProperty)}"`;
  if (e.keyword === 'enum') return `${where}: must be one of ${JSON.stringify(e.params.allowedValues)}`;
  return `${where}: ${e.message ?? e.keyword}`;
}

export class FirecrackerApiSpec {
  readonly version: string;
  readonly strictness: Strictness;
  private readonly ops: Operation[] = [];

  private constructor(doc: Json, strictness: Strictness) {
    const info = isObj(doc.info) ? doc.info : {};
    this.version = String(info.version);
    this.strictness = strictness;
    if (doc.swagger !== '2.0' || !isObj(doc.paths) || !isObj(doc.definitions)) throw new Error('not a swagger 2.0 document');
    const ajv = new Ajv({ allErrors: true, strict: true });
    ajv.addFormat('int32', { type: 'number', validate: (n: number) => Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31 });
    ajv.addFormat('int64', { type: 'number', validate: (n: number) => Number.isInteger(n) });
    ajv.addSchema({ $id: 'req', definitions: convert(doc.definitions, 'req', true, strictness) as Json });
    ajv.addSchema({ $id: 'res', definitions: convert(doc.definitions, 'res', false, strictness) as Json });
    for (const [template, item] of Object.entries(doc.paths)) {
      if (!isObj(item)) continue;
      const names: string[] = [];
      const regex = new RegExp('^' + template.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\{(\w+)\}/g, (_, n: string) => { names.push(n); return '([^/]+)'; }) + '$');
      for (const method of METHODS) {
        const op = item[method];
        if (!isObj(op)) continue;
        const params = Array.isArray(op.parameters) ? op.parameters.filter(isObj) : [];
        const bodyParam = params.find((p) => p.in === 'body');
        const responses = new Map<string, ValidateFunction>();
        for (const [status, r] of Object.entries(isObj(op.responses) ? op.responses : {})) {
          if (isObj(r) && isObj(r.schema)) responses.set(status, ajv.compile(convert(r.schema, 'res', false, strictness) as Json));
        }
        this.ops.push({
          method: method.toUpperCase(),
          template,
          operationId: String(op.operationId ?? `${method} ${template}`),
          regex,
          body: bodyParam && isObj(bodyParam.schema)
            ? { required: bodyParam.required === true, validate: ajv.compile(convert(bodyParam.schema, 'req', true, strictness) as Json) }
            : undefined,
          responses,
        });
      }
    }
  }

  private static cache = new Map<string, FirecrackerApiSpec>();

  /** The spec of one supported Firecracker version (default: the oldest supported, 1.15.1). */
  static load(version: SpecVersion = '1.15.1', strictness: Strictness = 'spec'): FirecrackerApiSpec {
    const key = `${version}/${strictness}`;
    let s = this.cache.get(key);
    if (!s) {
      s = new FirecrackerApiSpec(parseYaml(readFileSync(SPEC_FILES[version], 'utf8')) as Json, strictness);
      this.cache.set(key, s);
    }
    return s;
  }

  /** Every (method, path template) the spec defines. */
  operations(): { method: string; template: string; operationId: string; hasBody: boolean }[] {
    return this.ops.map((o) => ({ method: o.method, template: o.template, operationId: o.operationId, hasBody: !!o.body }));
  }

  match(method: string, path: string): { operationId: string; template: string; params: string[] } | undefined {
    const p = path.split('?')[0]!;
    for (const o of this.ops) {
      if (o.method !== method.toUpperCase()) continue;
      const m = o.regex.exec(p);
      if (m) return { operationId: o.operationId, template: o.template, params: m.slice(1).map(decodeURIComponent) };
    }
    return undefined;
  }

  /** Checks method + path against the spec's paths and the body against the operation's schema. */
  validateRequest(req: ApiRequest): Validation {
    const p = req.path.split('?')[0]!;
    const op = this.ops.find((o) => o.method === req.method.toUpperCase() && o.regex.test(p));
    if (!op) {
      const other = this.ops.filter((o) => o.regex.test(p)).map((o) => o.method);
      return { ok: false, errors: [other.length ? `${req.method} is not defined for ${p} (only ${other.join(', ')})` : `no such path in the Firecracker ${this.version} API: ${p}`] };
    }
    const params = op.regex.exec(p)!.slice(1);
    if (params.some((x) => x === '')) return { ok: false, errors: ['a path parameter is empty'] };
    if (req.body === undefined) {
      if (op.body?.required) return { ok: false, errors: [`${op.operationId} requires a body`] };
      return { ok: true, operationId: op.operationId };
    }
    if (!op.body) return { ok: false, errors: [`${op.operationId} takes no body`] };
    if (op.body.validate(req.body)) return { ok: true, operationId: op.operationId };
    return { ok: false, errors: (op.body.validate.errors ?? []).map(describeError) };
  }

  /** Checks a response body against the schema the spec gives for that status (or `default`). */
  validateResponse(method: string, path: string, status: number, body: unknown): Validation {
    const p = path.split('?')[0]!;
    const op = this.ops.find((o) => o.method === method.toUpperCase() && o.regex.test(p));
    if (!op) return { ok: false, errors: [`no operation ${method} ${p}`] };
    const v = op.responses.get(String(status)) ?? (status >= 300 ? op.responses.get('default') : undefined);
    if (!v) return body === undefined || body === '' ? { ok: true, operationId: op.operationId } : { ok: false, errors: [`the spec defines no body for status ${status}`] };
    if (v(body)) return { ok: true, operationId: op.operationId };
    return { ok: false, errors: (v.errors ?? []).map(describeError) };
  }
}
