// A strict parser of the Prometheus text exposition format 0.0.4, for the metrics tests: no npm
// parser is installed, and prom-client only writes the format. It throws on anything a scraper
// would reject or misread: an unknown line, a bad name, label or value, a TYPE after samples, a
// family whose samples are split up, a duplicate series; and checkFamilies() adds the naming and
// histogram rules (counters end in _total, buckets cumulative and ending at +Inf == _count).
import assert from 'node:assert/strict';

export type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Family {
  name: string;
  help: string | undefined;
  type: MetricType | undefined;
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

/** The family a sample belongs to: histogram and summary series carry suffixes. */
function familyOf(sample: string, families: Map<string, Family>): Family | undefined {
  for (const suffix of ['_bucket', '_sum', '_count', '']) {
    if (!sample.endsWith(suffix)) continue;
    const f = families.get(sample.slice(0, sample.length - suffix.length));
    if (!f) continue;
    if (suffix === '' || f.type === 'histogram' || (f.type === 'summary' && suffix !== '_bucket')) return f;
  }
  return undefined;
}

/** A sample value as Prometheus reads it (Go's ParseFloat: Inf and NaN in any case; prom-client writes "Nan"). */
function parseValue(text: string, line: string): number {
  if (/^\+?inf(inity)?$/i.test(text)) return Infinity;
  if (/^-inf(inity)?$/i.test(text)) return -Infinity;
  if (/^nan$/i.test(text)) return NaN;
  assert.match(text, /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/, `bad value in: ${line}`);
  return Number(text);
}

/** `{a="x",b="y"}` from position `i` of `line`; returns the labels and the position after `}`. */
function parseLabels(line: string, i: number): { labels: Record<string, string>; end: number } {
  const labels: Record<string, string> = {};
  assert.equal(line[i], '{');
  i++;
  while (line[i] !== '}') {
    const eq = line.indexOf('=', i);
    assert.ok(eq > i, `bad label in: ${line}`);
    const name = line.slice(i, eq);
    assert.match(name, LABEL_NAME, `bad label name "${name}" in: ${line}`);
    assert.ok(!(name in labels), `label ${name} twice in: ${line}`);
    assert.equal(line[eq + 1], '"', `label value not quoted in: ${line}`);
    let j = eq + 2;
    let value = '';
    for (; ; j++) {
      assert.ok(j < line.length, `unterminated label value in: ${line}`);
      const c = line[j]!;
      if (c === '"') break;
      if (c === '\\') {
        const n = line[++j];
        assert.ok(n === '\\' || n === '"' || n === 'n', `bad escape \\${n} in: ${line}`);
        value += n === 'n' ? '\n' : n;
      } else {
        value += c;
      }
    }
    labels[name] = value;
    i = j + 1;
    if (line[i] === ',') i++;
    else assert.equal(line[i], '}', `expected , or } in: ${line}`);
  }
  return { labels, end: i + 1 };
}

export function parsePromText(text: string): Map<string, Family> {
  assert.ok(text.endsWith('\n'), 'the exposition must end with a newline');
  const families = new Map<string, Family>();
  const seen = new Set<string>();
  let current: Family | undefined;
  const declare = (name: string): Family => {
    assert.match(name, NAME, `bad metric name ${name}`);
    let f = families.get(name);
    if (!f) families.set(name, (f = { name, help: undefined, type: undefined, samples: [] }));
    assert.equal(f.samples.length, 0, `HELP/TYPE of ${name} after its samples`);
    return f;
  };
  for (const line of text.slice(0, -1).split('\n')) {
    if (line === '') continue;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
      if (!m) continue; // a plain comment
      const f = declare(m[2]!);
      if (m[1] === 'HELP') {
        assert.equal(f.help, undefined, `two HELP lines for ${f.name}`);
        assert.doesNotMatch(m[3]!.replaceAll('\\\\', '').replaceAll('\\n', ''), /\\/, `bad escape in HELP of ${f.name}`);
        f.help = m[3]!.replaceAll('\\n', '\n').replaceAll('\\\\', '\\');
      } else {
        assert.equal(f.type, undefined, `two TYPE lines for ${f.name}`);
        assert.ok(TYPES.has(m[3]!), `unknown type ${m[3]} for ${f.name}`);
        f.type = m[3] as MetricType;
      }
      current = f;
      continue;
    }
    const nameEnd = line.search(/[{ ]/);
    assert.ok(nameEnd > 0, `not a sample: ${line}`);
    const name = line.slice(0, nameEnd);
    assert.match(name, NAME, `bad metric name in: ${line}`);
    let labels: Record<string, string> = {};
    let i = nameEnd;
    if (line[i] === '{') ({ labels, end: i } = parseLabels(line, i));
    assert.equal(line[i], ' ', `expected a space before the value in: ${line}`);
    const [valueText, timestamp, ...rest] = line.slice(i + 1).split(' ');
    assert.equal(rest.length, 0, `trailing text in: ${line}`);
    if (timestamp !== undefined) assert.match(timestamp, /^-?\d+$/, `bad timestamp in: ${line}`);
    const value = parseValue(valueText!, line);
    let f = familyOf(name, families);
    if (!f) {
      // An untyped sample with no HELP/TYPE: its own family.
      f = declare(name);
    }
    assert.ok(f === current || f.samples.length === 0, `samples of ${f.name} are not together`);
    current = f;
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    assert.ok(!seen.has(key), `duplicate series ${key}`);
    seen.add(key);
    f.samples.push({ name, labels, value });
  }
  return families;
}

/** The labels without `le`, as a key: one histogram series per key. */
const seriesKey = (labels: Record<string, string>) => JSON.stringify(Object.entries(labels).filter(([k]) => k !== 'le').sort());

/**
 * The rules a well-formed exposition keeps: every family of `prefix` has HELP and TYPE, its
 * counters (and only they) end in _total, and every histogram's buckets are cumulative, end at
 * +Inf, and equal _count there, with a _sum beside them.
 */
export function checkFamilies(families: Map<string, Family>, prefix: string): void {
  for (const f of families.values()) {
    if (f.name.startsWith(prefix)) {
      assert.ok(f.help, `${f.name} has no HELP`);
      assert.ok(f.type && f.type !== 'untyped', `${f.name} has no TYPE`);
      assert.equal(f.name.endsWith('_total'), f.type === 'counter', `${f.name}: counters, and only they, end in _total`);
    }
    if (f.type === 'counter') for (const s of f.samples) assert.ok(s.value >= 0, `${s.name} is negative`);
    if (f.type !== 'histogram') continue;
    const series = new Map<string, { buckets: [number, number][]; sum?: number; count?: number }>();
    for (const s of f.samples) {
      const e = series.get(seriesKey(s.labels)) ?? { buckets: [] };
      series.set(seriesKey(s.labels), e);
      if (s.name === `${f.name}_bucket`) {
        assert.ok('le' in s.labels, `${s.name} without le`);
        e.buckets.push([parseValue(s.labels.le!, s.name), s.value]);
      } else if (s.name === `${f.name}_sum`) e.sum = s.value;
      else if (s.name === `${f.name}_count`) e.count = s.value;
      else assert.fail(`${s.name} in histogram ${f.name}`);
    }
    for (const [key, e] of series) {
      assert.ok(e.buckets.length > 0 && e.sum !== undefined && e.count !== undefined, `${f.name}${key}: buckets, _sum and _count`);
      for (let k = 1; k < e.buckets.length; k++) {
        assert.ok(e.buckets[k]![0] > e.buckets[k - 1]![0], `${f.name}${key}: buckets out of order`);
        assert.ok(e.buckets[k]![1] >= e.buckets[k - 1]![1], `${f.name}${key}: buckets not cumulative`);
      }
      assert.equal(e.buckets.at(-1)![0], Infinity, `${f.name}${key}: the last bucket is not +Inf`);
      assert.equal(e.buckets.at(-1)![1], e.count, `${f.name}${key}: the +Inf bucket is not _count`);
      assert.ok(e.sum! >= 0, `${f.name}${key}: a negative _sum (every histogram here is of durations)`);
    }
  }
}

/** The value of sample `name` with exactly these labels, if there is one. */
export function valueOf(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const f of families.values()) {
    for (const s of f.samples) {
      if (s.name !== name) continue;
      const keys = Object.keys(s.labels);
      if (keys.length === Object.keys(labels).length && keys.every((k) => s.labels[k] === labels[k])) return s.value;
    }
  }
  return undefined;
}

/** Every label value of every sample. */
export function labelValues(families: Map<string, Family>): string[] {
  return [...families.values()].flatMap((f) => f.samples.flatMap((s) => Object.values(s.labels)));
}
