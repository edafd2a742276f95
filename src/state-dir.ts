// Where emberd keeps state that outlives a daemon process (the auth token now; paused sandboxes
// later): /var/lib/emberd as root, else $XDG_STATE_HOME/emberd (~/.local/state/emberd). The
// daemon, emberctl and the SDK agree on it, so a local client finds the token by itself.
import { homedir } from 'node:os';
import { join } from 'node:path';

export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  if (process.getuid?.() === 0) return '/var/lib/emberd';
  return join(env.XDG_STATE_HOME || join(homedir(), '.local', 'state'), 'emberd');
}

/** The daemon's bearer token, unless --auth-token-file says otherwise. */
export function defaultTokenFile(env: NodeJS.ProcessEnv = process.env): string {
  return join(defaultStateDir(env), 'token');
}
