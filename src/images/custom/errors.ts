// Errors of `emberd packs build|import`, with stable codes. A problem the user fixes in what they
// gave us (the spec, the archive, the flags) exits 2; anything else (apt, mksquashfs, the disk) 1.

export type CustomPackErrorCode =
  /** the spec file: syntax, unknown keys, bad values, missing files, unknown Debian packages */
  | 'PACK_SPEC_INVALID'
  /** the name clashes with a built-in pack or is not [a-z0-9-]{1,32} */
  | 'PACK_NAME_INVALID'
  /** the base pack is not built in this images dir (or does not match its record) */
  | 'PACK_BASE_NOT_BUILT'
  /** the OCI / docker archive or the rootfs directory cannot be used */
  | 'PACK_IMPORT_INVALID'
  /** a tool the importer needs (umoci) is not installed */
  | 'PACK_TOOL_MISSING';

const USER_ERRORS: ReadonlySet<CustomPackErrorCode> = new Set(['PACK_SPEC_INVALID', 'PACK_NAME_INVALID', 'PACK_IMPORT_INVALID']);

export class CustomPackError extends Error {
  readonly code: CustomPackErrorCode;
  constructor(code: CustomPackErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CustomPackError';
    this.code = code;
  }
  /** 2 for what the user gave us, 1 for everything else. */
  get exitCode(): number {
    return USER_ERRORS.has(this.code) ? 2 : 1;
  }
}
