// Where the Firecracker API test double lives, for tests that pass it as `--firecracker`.
import { fileURLToPath } from 'node:url';

export const FIRECRACKER_DOUBLE = fileURLToPath(new URL('./firecracker-double', import.meta.url));
export const FAKE_JAILER = fileURLToPath(new URL('./fake-jailer', import.meta.url));
