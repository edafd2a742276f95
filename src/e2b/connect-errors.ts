// emberd's error codes as Connect-RPC codes, which envd's clients match on (the E2B SDK turns
// not_found into NotFoundError, invalid_argument into InvalidArgumentError, ...).
import { Code, ConnectError } from '@connectrpc/connect';
import { isEmberdError } from '../errors.ts';

const BY_STATUS: Record<number, Code> = {
  400: Code.InvalidArgument, 401: Code.Unauthenticated, 403: Code.PermissionDenied, 404: Code.NotFound, 409: Code.FailedPrecondition,
  413: Code.ResourceExhausted, 429: Code.ResourceExhausted, 503: Code.Unavailable, 504: Code.DeadlineExceeded, 507: Code.ResourceExhausted,
};

export function toConnectError(e: unknown): ConnectError {
  if (e instanceof ConnectError) return e;
  if (isEmberdError(e)) return new ConnectError(e.message, BY_STATUS[e.status] ?? Code.Internal);
  return new ConnectError(`internal error: ${(e as Error).message}; this is a bug in emberd, please report it`, Code.Internal);
}

/** `fn`'s errors as ConnectErrors. */
export async function connectErrors<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw toConnectError(e);
  }
}
