import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { MemorySample, ScenarioId } from '../workers/runtime/protocol.js';
import type { CpuPerEvent } from './cpu.js';
import type { Environment } from './environment.js';
import type { BenchOptions } from './options.js';
import { RESULTS_DIR, RESULTS_FILE } from './paths.js';
import { LOG_LEVELS, type ScenarioRound } from './phases.js';
import { SCENARIOS } from './scenarios.js';
import { type Spread, spread } from './stats.js';

export interface RunReport {
  runId: string;
  startedAt: string;
  durationS: number;
  options: BenchOptions;
  environment: Environment;
  scenarios: ScenarioId[];
  /** Scenarios that could not run at all, and why. */
  unavailable: Partial<Record<ScenarioId, string>>;
  rounds: ScenarioRound[];
  /** Set while the run goes on (and kept if it was interrupted): how far it got. */
  interrupted?: string;
}

export interface SoakReport {
  runId: string;
  startedAt: string;
  options: BenchOptions;
  environment: Environment;
  results: SoakResult[];
}

export interface SoakResult {
  scenario: ScenarioId;
  ok: boolean;
  error?: string;
  minutes: number;
  rate: number;
  events: number;
  samples: MemorySample[];
  /** RSS after 10 % of the soak (warmed up), at half time, and at the end. */
  startMb?: number;
  middleMb?: number;
  endMb?: number;
  maxMb?: number;
  growthPct?: number;
  /** Lowest V8 heap used in the minute after 10 % of the soak, and in its last minute. */
  heapFloorStartMb?: number;
  heapFloorEndMb?: number;
  handlerStartP99?: number;
  ackP99?: number;
}

/** RSS may grow this much from 10 % of the soak to its end and still count as flat. */
export const FLAT_RSS_GROWTH_PCT = 10;

type Key = 'e2e' | 'drain' | 'publish' | 'deliveryP50' | 'deliveryP99' | 'startP50' | 'startP99' | 'ackP50' | 'ackP99' | 'rss' | 'healthy' | 'failureRatio';

function value(round: ScenarioRound, key: Key): number | undefined {
  switch (key) {
    case 'e2e':
    case 'drain':
    case 'publish':
      return round[key];
    case 'deliveryP50':
      return round.latency?.delivery?.p50;
    case 'deliveryP99':
      return round.latency?.delivery?.p99;
    case 'startP50':
      return round.latency?.handlerStart.p50;
    case 'startP99':
      return round.latency?.handlerStart.p99;
    case 'ackP50':
      return round.latency?.ack.p50;
    case 'ackP99':
      return round.latency?.ack.p99;
    case 'rss':
      return round.rssMb;
    case 'healthy':
      return round.failure?.healthyRate;
    case 'failureRatio':
      return round.failure?.ratio;
  }
}

const okRounds = (report: RunReport, id: ScenarioId) => report.rounds.filter((round) => round.scenario === id && round.ok);

export function summary(report: RunReport, id: ScenarioId, key: Key): Spread | undefined {
  return spread(okRounds(report, id).map((round) => value(round, key)));
}

/** Ratio of `id` to `base`, computed inside each round, then spread over rounds. */
export function ratio(report: RunReport, id: ScenarioId, base: ScenarioId, key: Key): Spread | undefined {
  const bases = new Map(okRounds(report, base).map((round) => [round.round, value(round, key)]));
  return spread(
    okRounds(report, id).map((round) => {
      const mine = value(round, key);
      const theirs = bases.get(round.round);
      return mine !== undefined && theirs ? mine / theirs : undefined;
    }),
  );
}

/** One process's CPU per event in one phase, spread over the rounds. */
function cpuSummary(report: RunReport, id: ScenarioId, phase: 'e2e' | 'publish' | 'drain' | 'latency', key: keyof CpuPerEvent): Spread | undefined {
  // Below zero is no measurement: runs recorded before PostgreSQL's processes were counted one
  // by one lost the time of a connection that closed during the phase.
  return spread(okRounds(report, id).map((round) => round.cpu?.[phase]?.[key]).map((us) => (us !== undefined && us < 0 ? undefined : us)));
}

const rateText = (x: number) => Math.round(x).toLocaleString('en-US');
const msText = (x: number) => (x < 10 ? x.toFixed(2) : x.toFixed(1));
const mbText = (x: number) => x.toFixed(0);
const ratioText = (x: number) => `${x.toFixed(2)}×`;

function cell(value: Spread | undefined, format: (x: number) => string, formatMedian = format): string {
  if (!value) return '–';
  return value.n > 1 ? `${formatMedian(value.median)} (${format(value.min)}–${format(value.max)})` : formatMedian(value.median);
}

function table(header: string[], rows: string[][]): string {
  return [`| ${header.join(' | ')} |`, `| ${header.map((_, i) => (i === 0 ? '---' : '---:')).join(' | ')} |`, ...rows.map((row) => `| ${row.join(' | ')} |`)].join('\n');
}

const name = (id: ScenarioId) => `(${id}) ${SCENARIOS[id].label}`;

interface Target {
  text: string;
  verdict: (report: RunReport) => string;
}

/** The handler settings the library itself reported (defaults resolved), e.g. "; as resolved: concurrency 50, batchSize 50". */
function librarySettings(report: RunReport): string {
  const settings = report.rounds.find((round) => SCENARIOS[round.scenario].library && round.consumerSettings)?.consumerSettings;
  if (!settings) return '';
  return `; as the library resolved them: ${Object.entries(settings).map(([key, value]) => `${key} ${value}`).join(', ')}`;
}

/** In how many rounds the consumer handled the latency phase at (95 % of) the offered rate; below it, latency is queueing. */
function keptUp(report: RunReport, id: ScenarioId): string {
  const rates = okRounds(report, id)
    .map((round) => round.latency?.consumerRate)
    .filter((value): value is number => value !== undefined);
  if (rates.length === 0) return '–';
  const kept = rates.filter((value) => value >= 0.95 * report.options.rate).length;
  return `${kept} of ${rates.length} rounds (${rateText(Math.min(...rates))}–${rateText(Math.max(...rates))}/s)`;
}

/** A ratio with as many digits as it takes to fall on the same side of the line as the verdict (0.848×, not 0.85×, under 0.85). */
function decisiveRatio(x: number, met: (x: number) => boolean): string {
  for (let digits = 2; digits <= 6; digits++) if (met(Number(x.toFixed(digits))) === met(x)) return `${x.toFixed(digits)}×`;
  return `${x}×`;
}

function targetLine(spreadValue: Spread | undefined, met: (x: number) => boolean): string {
  if (!spreadValue) return 'not measured in this run';
  return `${met(spreadValue.median) ? '**met**' : '**not met**'}: ${cell(spreadValue, ratioText, (x) => decisiveRatio(x, met))}`;
}

const TARGETS: Target[] = [
  { text: '(d) e2e ≥ 1.0× (c)', verdict: (r) => targetLine(ratio(r, 'd', 'c', 'e2e'), (x) => x >= 1.0) },
  { text: '(d) drain ≥ 0.85× (a)', verdict: (r) => targetLine(ratio(r, 'd', 'a', 'drain'), (x) => x >= 0.85) },
  { text: "(d) p99 publish → handler start ≤ 2× (a)'s", verdict: (r) => targetLine(ratio(r, 'd', 'a', 'startP99'), (x) => x <= 2.0) },
  { text: '(d) publish-only ≥ 0.95× (a)', verdict: (r) => targetLine(ratio(r, 'd', 'a', 'publish'), (x) => x >= 0.95) },
  // The same two targets with the handler doing exactly (a)'s work: what the library's guarantees cost.
  { text: "(i), (d) with (a)'s statement: drain ≥ 0.85× (a)", verdict: (r) => targetLine(ratio(r, 'i', 'a', 'drain'), (x) => x >= 0.85) },
  { text: "(i), (d) with (a)'s statement: p99 publish → handler start ≤ 2× (a)'s", verdict: (r) => targetLine(ratio(r, 'i', 'a', 'startP99'), (x) => x <= 2.0) },
];

function present(report: RunReport): ScenarioId[] {
  return report.scenarios.filter((id) => !report.unavailable[id]);
}

export function renderRun(report: RunReport): string {
  const { options, environment: env } = report;
  const ids = present(report);
  const rounds = options.rounds;
  const failEvery = options.failPct > 0 ? Math.max(1, Math.round(100 / options.failPct)) : 0;
  const out: string[] = [];
  out.push(`## Run ${report.runId}`, '');
  out.push(`${report.startedAt}, ${rounds} round(s), ${Math.round(report.durationS)} s. \`npm run bench\` (${describeOptions(options)}).`, '');
  if (report.interrupted) out.push(`**Incomplete: the run was interrupted ${report.interrupted}.**`, '');

  out.push('### Machine and versions', '');
  out.push(`- ${env.machine.cpu}, ${env.machine.cores} cores, ${env.machine.ramGb} GiB RAM, ${env.machine.os}, Node ${env.machine.node}`);
  out.push(`- ${env.services.rabbitmq}, ${env.services.postgres}${env.services.sqlite ? `, ${env.services.sqlite}` : ''} (all on this machine)`);
  out.push(`- nestjs-event-sync ${env.library}; ${Object.entries(env.packages).map(([pkg, version]) => `${pkg} ${version}`).join(', ')}`);
  if (Object.keys(env.golevelupPackages).length > 0) {
    out.push(`- bench/golevelup (scenario c): ${Object.entries(env.golevelupPackages).map(([pkg, version]) => `${pkg} ${version}`).join(', ')}`);
  }
  out.push('');

  out.push('### Settings', '');
  out.push(`- ${options.events.toLocaleString('en-US')} events of ~200 bytes of JSON per throughput phase; durable queue, persistent messages, publisher confirms, prefetch ${options.prefetch}, manual acks; publisher and consumer in separate processes; at most ${options.window} publishes awaiting a confirm at once.`);
  out.push(`- Every handler upserts one users row on ${'PostgreSQL'} (SQLite for e) through a pool of ${options.pool} connections.`);
  out.push(`- nestjs-event-sync: \`SyncModule.forRoot({ prefetch: ${options.prefetch}, retry: { attempts: 3, delays: [${options.retryDelayMs}] }${options.batchSize === undefined ? '' : `, batchSize: ${options.batchSize}`}${options.queueMode === undefined ? '' : `, queueMode: '${options.queueMode}'`} })\`, \`@OnEvent(..., { concurrency: ${options.concurrency}${options.parallel ? ', parallel: true' : ''} })\` (per-handler options; defaults 1 and false)${options.parallel ? ', PostgreSQL pools with `extra: { pipeline: true }` (d, f, g, i, j)' : ''}${librarySettings(report)}.`);
  out.push(`- Nest logger levels of every Nest app: ${LOG_LEVELS.join(', ')}.`);
  out.push(`- Latency: a steady ${options.rate.toLocaleString('en-US')} events/s for ${options.duration} s. A consumer slower than that rate builds a backlog, and its latencies are then mostly time spent queued (seconds rather than milliseconds).`);
  out.push(`- Failure cost: every ${failEvery}th event (${options.failPct} %) fails once after its upsert and goes through a ${options.retryDelayMs} ms retry tier; healthy events/s is the events that never failed over first publish → last of them acked, as a ratio to the same round's e2e (0 % failing).`);
  const loads = spread(report.rounds.map((round) => round.loadAverage));
  if (options.prefill > 0) {
    out.push(
      `- Dedupe table filled before each round of d–j on PostgreSQL (\`--prefill\`): ${options.prefill.toLocaleString('en-US')} rows of earlier events of the scenario's consumer, one per 100 ms back from the round's start, ids of the kind the scenario publishes (UUIDv7; random UUIDv4 for j), then VACUUM ANALYZE and a CHECKPOINT.`,
    );
  }
  if (loads) out.push(`- Machine load (1-min load average at the start of each scenario round, the run's own processes included): ${loads.min.toFixed(1)}–${loads.max.toFixed(1)}, median ${loads.median.toFixed(1)}.`);
  out.push(`- Rounds interleave the scenarios (the order rotates by one each round); each figure is the median with min–max over the rounds, and ratios are taken within a round, then their median.`);
  out.push('');
  for (const id of report.scenarios) out.push(`- **${name(id)}**: ${report.unavailable[id] ? `not available: ${report.unavailable[id]}` : SCENARIOS[id].description}`);
  out.push('');

  out.push('### Throughput (events/s)', '');
  out.push(
    table(
      ['scenario', 'e2e', 'drain', 'publish-only', `healthy, ${options.failPct} % failing`, 'ratio to 0 % failing'],
      ids.map((id) => [name(id), cell(summary(report, id, 'e2e'), rateText), cell(summary(report, id, 'drain'), rateText), cell(summary(report, id, 'publish'), rateText), cell(summary(report, id, 'healthy'), rateText), cell(summary(report, id, 'failureRatio'), ratioText)]),
    ),
  );
  out.push('');
  out.push(`### Latency at ${options.rate.toLocaleString('en-US')} events/s (ms) and consumer memory`, '');
  if (ids.some((id) => summary(report, id, 'deliveryP99'))) {
    out.push(
      "Publish → delivery ends when the client's consume callback gets the message in the consumer process, before the client's own path to the handler (for this library: the dedupe insert and a free transaction). It grows with how busy the consumer process and the machine are.",
      '',
    );
  }
  out.push(
    table(
      ['scenario', 'publish → delivery p50', 'p99', 'publish → handler start p50', 'p99', 'publish → ack p50', 'p99', 'kept up with the rate', 'consumer peak RSS (MiB)'],
      ids.map((id) => [
        name(id),
        cell(summary(report, id, 'deliveryP50'), msText),
        cell(summary(report, id, 'deliveryP99'), msText),
        cell(summary(report, id, 'startP50'), msText),
        cell(summary(report, id, 'startP99'), msText),
        cell(summary(report, id, 'ackP50'), msText),
        cell(summary(report, id, 'ackP99'), msText),
        keptUp(report, id),
        cell(summary(report, id, 'rss'), mbText),
      ]),
    ),
  );
  out.push('');
  if (ids.some((id) => okRounds(report, id).some((round) => round.cpu))) {
    const microText = (x: number) => Math.round(x).toLocaleString('en-US');
    out.push('### CPU per event (µs)', '');
    out.push(
      `CPU time (user + system, read from /proc before and after the phase) per event handled: the consumer, the publisher, RabbitMQ and PostgreSQL (all its processes), and their sum. The four share the machine's ${report.environment.machine.cores} cores, so the sum bounds the rate: at ${options.rate.toLocaleString('en-US')} events/s, ${(1_000_000 / options.rate).toLocaleString('en-US')} µs per event is one core busy.`,
      '',
    );
    out.push(
      table(
        ['scenario', 'drain: consumer', 'RabbitMQ', 'PostgreSQL', 'all', `at ${options.rate.toLocaleString('en-US')}/s: consumer`, 'publisher', 'RabbitMQ', 'PostgreSQL', 'all'],
        ids.map((id) => [
          name(id),
          ...(['consumer', 'broker', 'postgres', 'all'] as const).map((key) => cell(cpuSummary(report, id, 'drain', key), microText)),
          ...(['consumer', 'publisher', 'broker', 'postgres', 'all'] as const).map((key) => cell(cpuSummary(report, id, 'latency', key), microText)),
        ]),
      ),
    );
    out.push('');
    if (ids.some((id) => okRounds(report, id).some((round) => round.cpu?.e2e || round.cpu?.publish))) {
      out.push(
        'The same for the end-to-end phase (publisher and consumer at once) and the publish-only phase (the publisher alone):',
        '',
        table(
          ['scenario', 'e2e: consumer', 'publisher', 'RabbitMQ', 'PostgreSQL', 'all', 'publish-only: publisher', 'RabbitMQ', 'PostgreSQL', 'all'],
          ids.map((id) => [
            name(id),
            ...(['consumer', 'publisher', 'broker', 'postgres', 'all'] as const).map((key) => cell(cpuSummary(report, id, 'e2e', key), microText)),
            ...(['publisher', 'broker', 'postgres', 'all'] as const).map((key) => cell(cpuSummary(report, id, 'publish', key), microText)),
          ]),
        ),
        '',
      );
    }
    const walIds = ids.filter((id) => okRounds(report, id).some((round) => round.wal));
    if (walIds.length > 0) {
      const walOf = (id: ScenarioId, phase: 'e2e' | 'drain') => spread(okRounds(report, id).map((round) => round.wal?.[phase]));
      out.push(
        "PostgreSQL's write-ahead log per event (bytes; the server's, read from `pg_current_wal_lsn()` before and after the phase):",
        '',
        table(['scenario', 'e2e', 'drain'], walIds.map((id) => [name(id), cell(walOf(id, 'e2e'), microText), cell(walOf(id, 'drain'), microText)])),
        '',
      );
    }
  }
  // (g) and (i) beside (d): what the stale-event guard costs over the plain path, and what the ORM's upsert builder costs.
  for (const base of (ids.some((id) => ['g', 'i', 'j'].includes(id)) ? ['a', 'c', 'd'] : ['a', 'c']) as ScenarioId[]) {
    if (!ids.includes(base)) continue;
    out.push(`### Ratios to ${name(base)} (per round, then median)`, '');
    out.push(
      table(
        ['scenario', 'e2e', 'drain', 'publish-only', 'start p99', 'ack p99', 'peak RSS', 'healthy, failing'],
        ids
          .filter((id) => id !== base)
          .map((id) => [
            name(id),
            ...(['e2e', 'drain', 'publish', 'startP99', 'ackP99', 'rss', 'healthy'] as Key[]).map((key) => cell(ratio(report, id, base, key), ratioText)),
          ]),
      ),
    );
    out.push('');
  }

  out.push('### Targets (issue 4)', '');
  for (const target of TARGETS) out.push(`- ${target.text}: ${target.verdict(report)}`);
  out.push(`- RSS flat across the soak: ${soakVerdict()}`);
  out.push('');

  const rerun = report.rounds.filter((round) => round.reruns);
  if (rerun.length > 0) {
    out.push('### Rounds run again', '');
    out.push('RabbitMQ was restarted (by something else on the machine) during these rounds; they were run again and only the complete run counts.', '');
    for (const round of rerun) out.push(`- round ${round.round}, ${name(round.scenario)}: ${round.reruns!.length} time(s)`);
    out.push('');
  }
  const skipped = new Map<string, ScenarioId>();
  for (const round of report.rounds) for (const why of round.skipped ?? []) skipped.set(why, round.scenario);
  if (skipped.size > 0) {
    out.push('### Phases not run', '');
    for (const [why, scenario] of skipped) out.push(`- ${name(scenario)}, ${why}`);
    out.push('');
  }
  const failed = report.rounds.filter((round) => !round.ok);
  if (failed.length > 0) {
    out.push('### Failed scenario rounds (left out of the figures)', '');
    for (const round of failed) out.push(`- round ${round.round}, ${name(round.scenario)}: ${oneLine(round.error)}`);
    out.push('');
  }
  return out.join('\n');
}

export function renderSoak(report: SoakReport): string {
  const out: string[] = [];
  out.push(`## Soak ${report.runId}`, '');
  out.push(`${report.startedAt}: \`npm run bench -- --soak ${report.options.soak}\` at ${report.options.rate.toLocaleString('en-US')} events/s; ${report.environment.machine.cores} cores, Node ${report.environment.machine.node}, ${report.environment.services.rabbitmq}, ${report.environment.services.postgres}; nestjs-event-sync ${report.environment.library}.`, '');
  out.push(
    table(
      ['scenario', 'events', 'RSS at 10 % (MiB)', 'at 50 %', 'at the end', 'max', 'growth 10 % → end', 'flat?', 'V8 heap floor 10 % → end (MiB)', 'start p99 (ms)', 'ack p99 (ms)'],
      report.results.map((result) =>
        result.ok
          ? [name(result.scenario), result.events.toLocaleString('en-US'), mbText(result.startMb!), mbText(result.middleMb!), mbText(result.endMb!), mbText(result.maxMb!), `${result.growthPct!.toFixed(1)} %`, result.growthPct! <= FLAT_RSS_GROWTH_PCT ? 'yes' : 'no', heapFloorText(result), msText(result.handlerStartP99!), msText(result.ackP99!)]
          : [name(result.scenario), `failed: ${oneLine(result.error)}`, '', '', '', '', '', '', '', '', ''],
      ),
    ),
  );
  out.push(
    '',
    `Flat means at most ${FLAT_RSS_GROWTH_PCT} % growth from 10 % of the soak to its end. RSS, V8 heap used and off-heap buffers sampled every 5 s; the samples are in bench/results/. ` +
      'The heap floor is the lowest heap-used sample in the minute after 10 % of the soak and in its last minute: a leak of live objects raises it, memory the allocator keeps after a burst does not.',
    '',
  );
  return out.join('\n');
}

function heapFloorText(result: SoakResult): string {
  if (result.heapFloorStartMb === undefined || result.heapFloorEndMb === undefined) return '–';
  return `${mbText(result.heapFloorStartMb)} → ${mbText(result.heapFloorEndMb)}`;
}

/** The soak target, from the latest soak recorded in bench/results (a soak runs by hand). */
function soakVerdict(): string {
  const latest = existsSync(RESULTS_DIR) ? readdirSync(RESULTS_DIR).filter((file) => file.endsWith('-soak.json')).sort().pop() : undefined;
  const hint = 'run by hand: `npm run bench -- --soak 10`';
  if (!latest) return `not measured yet (${hint})`;
  const soak = JSON.parse(readFileSync(join(RESULTS_DIR, latest), 'utf8')) as SoakReport;
  const d = soak.results.find((result) => result.scenario === 'd' && result.ok);
  if (!d) return `no successful soak of (d) recorded (${hint})`;
  const flat = d.growthPct! <= FLAT_RSS_GROWTH_PCT;
  return `${flat ? '**met**' : '**not met**'}: (d) ${mbText(d.startMb!)} → ${mbText(d.middleMb!)} → ${mbText(d.endMb!)} MiB over ${d.minutes} min (${d.growthPct!.toFixed(1)} %), soak ${soak.runId}`;
}

function describeOptions(options: BenchOptions): string {
  return `--rounds ${options.rounds} --events ${options.events} --scenarios ${options.scenarios.join(',')} --rate ${options.rate} --duration ${options.duration}${options.prefill > 0 ? ` --prefill ${options.prefill}` : ''}${options.queueMode === undefined ? '' : ` --queue-mode ${options.queueMode}`}`;
}

function oneLine(text: string | undefined): string {
  return (text ?? 'unknown error').split('\n')[0].slice(0, 300);
}

/** bench/results/<stamp>.json and .md (all rounds, raw), and the block of bench/RESULTS.md. */
export function writeResults(stamp: string, markdown: string, data: unknown, block: 'run' | 'soak'): string {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const base = join(RESULTS_DIR, stamp);
  if (data !== undefined) writeFileSync(`${base}.json`, `${JSON.stringify(data, null, 2)}\n`);
  writeFileSync(`${base}.md`, `${markdown}\n`);
  updateResultsFile(block, `${markdown}\nAll rounds: [results/${stamp}.json](results/${stamp}.json).\n`);
  return base;
}

const SKELETON = `# Benchmark results

How to run and what each figure means: [README.md](README.md). The sections between the
markers below are written by the harness (\`npm run bench\` writes the latest run, \`--soak\` the
latest soak); everything else in this file is kept as it is.

<!-- bench:run:begin -->
<!-- bench:run:end -->

<!-- bench:soak:begin -->
<!-- bench:soak:end -->
`;

function updateResultsFile(block: 'run' | 'soak', content: string): void {
  let text = existsSync(RESULTS_FILE) ? readFileSync(RESULTS_FILE, 'utf8') : SKELETON;
  const begin = `<!-- bench:${block}:begin -->`;
  const end = `<!-- bench:${block}:end -->`;
  const from = text.indexOf(begin);
  const to = text.indexOf(end);
  const section = `${begin}\n${content}\n${end}`;
  text = from >= 0 && to > from ? text.slice(0, from) + section + text.slice(to + end.length) : `${text.trimEnd()}\n\n${section}\n`;
  writeFileSync(RESULTS_FILE, text);
}
