// For the tests that drive the official E2B SDKs: the daemon helpers, with the test's global fetch
// checking emberd's answers against /openapi.json (daemon.ts installs that) except for E2B's own
// surfaces under /e2b/, which answer in E2B's shapes. Import this module before anything that
// imports daemon.ts, so the fetch it keeps is the real one.
const realFetch = globalThis.fetch;
const daemon = await import('./daemon.ts');
const checkedFetch = globalThis.fetch;
globalThis.fetch = ((input: string | URL | Request, init?: RequestInit) => {
  const url = new URL(typeof input === 'string' ? input : input instanceof URL ? input.href : input.url);
  return (url.pathname.startsWith('/e2b/') ? realFetch : checkedFetch)(input, init);
}) as typeof fetch;

export const { startDaemon, eventually, http } = daemon;
export { realFetch };
