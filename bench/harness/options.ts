import type { ScenarioId } from '../workers/runtime/protocol.js';

export const ALL_SCENARIOS: ScenarioId[] = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'];
/** (j) differs from (d) only in its event ids, which matters only with a filled dedupe table (`--prefill`): run it by name. */
export const DEFAULT_SCENARIOS: ScenarioId[] = ALL_SCENARIOS.filter((id) => id !== 'j');
export const ALL_METRICS = ['e2e', 'publish', 'drain', 'latency', 'failure'] as const;
export type Metric = (typeof ALL_METRICS)[number];

export interface BenchOptions {
  smoke: boolean;
  rounds: number;
  /** Events of the e2e, publish-only, drain and failure phases. */
  events: number;
  /** Publishes awaiting their confirm at once, in every publisher. */
  window: number;
  scenarios: ScenarioId[];
  metrics: Metric[];
  /** Latency phase: steady rate (events/s) and duration (s). Also the rate of the soak. */
  rate: number;
  duration: number;
  prefetch: number;
  /** This library's per-handler `concurrency`. */
  concurrency: number;
  /** This library's `batchSize`; undefined: its default. */
  batchSize?: number;
  /** This library's `queueMode`; undefined: its default. */
  queueMode?: 'lazy' | 'default';
  /** This library's handlers (d–i) run with `parallel: true` (PostgreSQL pools in pipeline mode). */
  parallel: boolean;
  /** Connections in each consumer's database pool. */
  pool: number;
  /** Failure-cost phase: percentage of events that fail once. */
  failPct: number;
  retryDelayMs: number;
  /** Rows of earlier events put in the dedupe table before each round of a library scenario on PostgreSQL. */
  prefill: number;
  /** Soak mode: minutes at the steady rate. */
  soak?: number;
  /** Run consumers and publishers under `node --cpu-prof` (profiles land in bench/results/profiles/). */
  cpuProf: boolean;
  /** Write bench/results/<timestamp>.{json,md} and bench/RESULTS.md. */
  write: boolean;
  amqpUrl: string;
  postgresUrl: string;
  /** Re-render the report of a results JSON (after a change to the report's format). */
  render?: string;
}

export const USAGE = `Usage: npm run bench [-- options]      (npm run bench:smoke for the quick check)

  --rounds N          rounds, scenarios interleaved in each (default 3)
  --events N          events per throughput phase (default 20000)
  --scenarios LIST    subset, e.g. a,c,d (default a,b,c,d,e,f,g,h,i; j only by name)
  --metrics LIST      subset of e2e,publish,drain,latency,failure (default all)
  --rate N            latency phase (and soak) rate, events/s (default 1000)
  --duration S        latency phase length, seconds (default 10)
  --window N          publishes awaiting a confirm at once (default 1000)
  --prefetch N        prefetch of every consumer (default 50)
  --concurrency N     this library's per-handler concurrency (default 4)
  --batch-size N      this library's batchSize (default: the library's default)
  --queue-mode MODE   this library's queueMode, lazy or default (default: the library's default)
  --parallel / --no-parallel  this library's handlers (d-g) with parallel: true and the
                      PostgreSQL pool in pipeline mode (default: on)
  --pool N            database connections per consumer (default 10)
  --fail-pct P        failure-cost phase: % of events that fail once (default 10)
  --retry-delay MS    retry tier delay (default 1000)
  --prefill N         before each round of d-j on PostgreSQL, fill the dedupe table with N
                      earlier events' rows, ids of the scenario's kind (default 0)
  --soak [MINUTES]    soak mode: steady --rate for MINUTES (default 10), RSS over time;
                      scenarios default to d
  --smoke             tiny counts, 1 round, no result files; fails if any event is missing
  --cpu-prof          run consumers and publishers under node --cpu-prof
  --write / --no-write  write bench/results and bench/RESULTS.md (default: on, off for --smoke)
  --render FILE       only re-render bench/results/FILE.json into its .md and RESULTS.md

Every option can also come from the environment: BENCH_ROUNDS, BENCH_EVENTS, BENCH_SCENARIOS,
BENCH_RATE, ... (upper case, '-' as '_'). AMQP_URL and POSTGRES_URL name the services.`;

/** Options from the command line, then BENCH_* variables, then defaults (smoke defaults with --smoke). */
export function parseOptions(argv: string[], env: NodeJS.ProcessEnv): BenchOptions | 'help' {
  const flags = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '-h' || arg === '--help') return 'help';
    if (!arg.startsWith('--')) throw new Error(`unexpected argument ${arg}\n\n${USAGE}`);
    const [name, inline] = arg.slice(2).split('=', 2);
    const next = argv[i + 1];
    if (inline !== undefined) flags.set(name, inline);
    else if (next !== undefined && !next.startsWith('--')) flags.set(name, argv[++i]);
    else flags.set(name, true);
  }
  const known = new Set(['rounds', 'events', 'scenarios', 'metrics', 'rate', 'duration', 'window', 'prefetch', 'concurrency', 'pool', 'fail-pct', 'retry-delay', 'soak', 'smoke', 'cpu-prof', 'write', 'no-write', 'render', 'batch-size', 'queue-mode', 'parallel', 'no-parallel', 'prefill']);
  for (const name of flags.keys()) if (!known.has(name)) throw new Error(`unknown option --${name}\n\n${USAGE}`);

  const raw = (name: string): string | true | undefined => flags.get(name) ?? env[`BENCH_${name.toUpperCase().replace(/-/g, '_')}`];
  const flag = (name: string): boolean => {
    const value = raw(name);
    return value === true || value === '1' || value === 'true';
  };
  const smoke = flag('smoke');
  const number = (name: string, fallback: number, min = 1): number => {
    const value = raw(name);
    if (value === undefined) return fallback;
    const parsed = Number(value);
    if (value === true || !Number.isFinite(parsed) || parsed < min) throw new Error(`--${name} needs a number >= ${min}, got ${String(value)}`);
    return parsed;
  };
  const list = <T extends string>(name: string, allowed: readonly T[], fallback: T[]): T[] => {
    const value = raw(name);
    if (value === undefined) return fallback;
    const items = String(value).split(',').map((item) => item.trim()).filter(Boolean);
    for (const item of items) if (!allowed.includes(item as T)) throw new Error(`--${name}: unknown "${item}" (choose from ${allowed.join(', ')})`);
    return items as T[];
  };

  const soakRaw = raw('soak');
  const soak = soakRaw === undefined ? undefined : soakRaw === true ? 10 : number('soak', 10);
  const prefetch = number('prefetch', 50);
  return {
    smoke,
    rounds: number('rounds', smoke ? 1 : 3),
    events: number('events', smoke ? 200 : 20_000),
    window: number('window', 1000),
    scenarios: list('scenarios', ALL_SCENARIOS, soak !== undefined ? ['d'] : DEFAULT_SCENARIOS),
    metrics: list('metrics', ALL_METRICS, [...ALL_METRICS]),
    rate: number('rate', smoke ? 200 : 1000),
    duration: number('duration', smoke ? 0.5 : 10, 0.1),
    prefetch,
    concurrency: number('concurrency', 4),
    batchSize: raw('batch-size') === undefined ? undefined : number('batch-size', 1),
    queueMode: queueMode(raw('queue-mode')),
    parallel: flag('no-parallel') ? false : raw('parallel') !== undefined ? flag('parallel') : true,
    pool: number('pool', 10),
    failPct: number('fail-pct', 10, 0),
    retryDelayMs: number('retry-delay', smoke ? 200 : 1000),
    prefill: number('prefill', 0, 0),
    soak,
    cpuProf: flag('cpu-prof'),
    write: flag('no-write') ? false : raw('write') !== undefined ? flag('write') : !smoke,
    amqpUrl: env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672',
    postgresUrl: env.POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test',
    render: typeof flags.get('render') === 'string' ? (flags.get('render') as string) : undefined,
  };
}

function queueMode(value: string | boolean | undefined): 'lazy' | 'default' | undefined {
  if (value === undefined) return undefined;
  if (value !== 'lazy' && value !== 'default') throw new Error(`--queue-mode needs lazy or default, got ${String(value)}`);
  return value;
}
