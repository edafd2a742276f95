// Small statistics helpers for the benchmarks: they print figures, they never assert on time.
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

export function fmt(ms: number): string {
  return ms >= 100 ? `${ms.toFixed(0)} ms` : ms >= 1 ? `${ms.toFixed(1)} ms` : `${(ms * 1000).toFixed(0)} us`;
}

export function row(label: string, xs: number[]): string {
  return `${label.padEnd(44)} median ${fmt(median(xs)).padStart(9)}  p90 ${fmt(percentile(xs, 90)).padStart(9)}  min ${fmt(Math.min(...xs)).padStart(9)}  n=${xs.length}`;
}
