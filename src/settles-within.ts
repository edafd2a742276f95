// Waiting for something with a bound: the one helper for "this, or give up after ms".

/**
 * Resolves true once `p` settles (resolved or rejected), or false after `ms`. The timer is
 * cleared either way and never keeps the process alive.
 */
export async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p.then(() => true, () => true),
      new Promise<boolean>((r) => { timer = setTimeout(() => r(false), ms).unref(); }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
