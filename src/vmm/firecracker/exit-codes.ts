// What a Firecracker process exit means (FcExitCode in src/vmm/src/lib.rs of Firecracker v1.15.1).

const CODES: Record<number, string> = {
  0: 'Firecracker exited normally (the guest rebooted or powered off, or SendCtrlAltDel was handled)',
  1: 'Firecracker failed with a generic error (see the console/log tail)',
  2: 'Firecracker hit an unexpected internal error',
  148: 'Firecracker was stopped by its seccomp filter after a forbidden system call (BadSyscall)',
  149: 'Firecracker received SIGBUS (guest memory backing file truncated or unavailable?)',
  150: 'Firecracker received SIGSEGV',
  151: 'Firecracker received SIGXFSZ (file size limit exceeded: jailer --resource-limit fsize?)',
  152: 'Firecracker rejected its configuration (BadConfiguration)',
  153: 'Firecracker rejected its command-line arguments (ArgParsing)',
  154: 'Firecracker received SIGXCPU (CPU time limit exceeded)',
  155: 'Firecracker received SIGPIPE',
  156: 'Firecracker received SIGHUP',
  157: 'Firecracker received SIGILL',
};

export function describeFirecrackerExit(code: number | null, signal: NodeJS.Signals | null): string {
  if (signal) return `Firecracker was killed by ${signal}`;
  if (code === null) return 'Firecracker exit status unknown';
  return `${CODES[code] ?? 'Firecracker exited with an undocumented code'} (exit code ${code})`;
}
