// The `emberd` package's entry point (docs/sdk.md): the Sandbox API, its one error class, and the
// low-level client. Framework adapters are subpath exports (emberd/ai, emberd/openai-agents,
// emberd/deepagents), so importing this never loads a framework.
export { Sandbox, type ConnectionOptions, type SandboxCreateOptions, type SandboxInfo, type RunCodeOptions, type RunCodeResult } from './sandbox.ts';
export { Commands, CommandHandle, type CommandOptions, type CommandResult } from './commands.ts';
export { Files } from './files.ts';
export { Ports, type ExposedPort } from './ports.ts';
export {
  EmberdClient, EmberdError, EmberdApiError, resolveToken,
  type ClientOptions, type CreateOptions, type ExecEvent, type ExecOptions, type ExecResponse, type FileStat, type PackInfo, type PausedInfo, type PortInfo,
  type ProcessInfo, type ProcessOutput, type ResultBundle, type SandboxDetails, type SandboxSummary, type UploadData,
} from './client.ts';
