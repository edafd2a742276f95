// Request bodies of the HTTP API, as zod schemas. docs/api.md documents them; the end-to-end tests
// exercise every rule. Unknown fields are rejected so a typo never silently does nothing.
import { z } from 'zod';

export const createSandboxBody = z.strictObject({
  language_pack: z.string().min(1).max(64).optional(),
}).optional();

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const env = z.record(z.string(), z.string().max(1 << 16)).refine((e) => Object.keys(e).every((k) => ENV_NAME.test(k)), {
  message: 'environment variable names are letters, digits and _, not starting with a digit',
});

export const execBody = z.strictObject({
  code: z.string().max(1 << 20).optional(),
  argv: z.array(z.string().max(1 << 16)).min(1).max(4096).optional(),
  env: env.optional(),
  cwd: z.string().min(1).max(4096).optional(),
  stdin: z.string().max(1 << 20).optional(),
  timeout_ms: z.number().int().positive().optional(),
}).refine((b) => (b.code === undefined) !== (b.argv === undefined), {
  message: 'give exactly one of "code" (source for the language pack\'s interpreter) or "argv" (a program and its arguments)',
});

export type CreateSandboxBody = z.infer<typeof createSandboxBody>;
export type ExecBody = z.infer<typeof execBody>;
