// Which listen addresses only this host can reach: there, auth may be off.

/** 127.0.0.0/8, ::1, ::ffff:127.x and localhost. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^(::ffff:)?127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/i.test(host);
}
