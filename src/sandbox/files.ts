// The files module's public face (importers keep `from './files.ts'`); the parts, one job each,
// are in ./files/: path rules, guest scripts, error mapping, listing parsing, exec streams and the
// SandboxFiles operations.
export { MAX_PATH_BYTES, normalizePath } from './files/path.ts';
export { fileError } from './files/errors.ts';
export { parseListing, type FileStat, type FileType } from './files/listing.ts';
export { SandboxFiles, type FileOpsOptions, type WriteOptions } from './files/sandbox-files.ts';
