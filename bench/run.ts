/**
 * The benchmark harness of issue 4: `npm run bench` (full), `npm run bench:smoke` (seconds),
 * `npm run bench -- --soak 10` (RSS over ten minutes). See bench/README.md.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { SyncPublisher } from 'nestjs-event-sync';
import type { ScenarioId } from './workers/runtime/protocol.js';
import { BrokerAdmin } from './harness/broker-admin.js';
import { killAllWorkers } from './harness/child.js';
import { DatabaseAdmin } from './harness/database-admin.js';
import { describeEnvironment } from './harness/environment.js';
import { prepareGolevelup } from './harness/golevelup.js';
import { type BenchOptions, parseOptions, USAGE } from './harness/options.js';
import { RESULTS_DIR } from './harness/paths.js';
import { type RunContext, runScenarioRound, type ScenarioRound } from './harness/phases.js';
import { renderRun, renderSoak, type RunReport, type SoakReport, writeResults } from './harness/report.js';
import { SCENARIOS, scenarioNames } from './harness/scenarios.js';
import { runSoak } from './harness/soak.js';

const log = (line: string) => console.log(`[bench] ${line}`);
/** How often a round voided by a broker restart is run again. */
const MAX_RERUNS = 3;

async function main(): Promise<number> {
  const parsed = parseOptions(process.argv.slice(2), process.env);
  if (parsed === 'help') {
    console.log(USAGE);
    return 0;
  }
  const options: BenchOptions = parsed;
  if (options.render) return rerender(options.render);
  const started = new Date();
  const stamp = started.toISOString().replace(/[-:]/g, '').replace(/\..*/, '').replace('T', '-');
  const runId = `bench-${stamp.toLowerCase()}-${randomBytes(2).toString('hex')}`;
  const unavailable: Partial<Record<ScenarioId, string>> = {};
  // ---- Outbox hook: scenario f runs only when the built library has SyncPublisher.prototype.transaction.
  if (options.scenarios.includes('f') && typeof (SyncPublisher.prototype as unknown as Record<string, unknown>).transaction !== 'function') {
    unavailable.f = 'SyncPublisher.prototype.transaction does not exist in this build (the outbox has not landed)';
  }
  const runnable = options.scenarios.filter((id) => !unavailable[id]);
  if (runnable.includes('c')) prepareGolevelup(log);

  const workDir = mkdtempSync(join(tmpdir(), `${runId}-`));
  const logDir = join(workDir, 'logs');
  mkdirSync(logDir);
  const profileDir = options.cpuProf ? join(RESULTS_DIR, 'profiles', runId) : undefined;
  if (profileDir) mkdirSync(profileDir, { recursive: true });

  const broker = await BrokerAdmin.connect(options.amqpUrl);
  const names = Object.fromEntries(runnable.map((id) => [id, scenarioNames(runId, id, options.retryDelayMs)]));
  let database: DatabaseAdmin | undefined;
  let failures = 0;
  let partial: string | undefined;
  const interrupt = (signal: NodeJS.Signals) => {
    log(`interrupted by ${signal}: ending workers and cleaning up${partial ? `; the rounds done so far are in ${partial} (npm run bench -- --render ${partial} renders them)` : ''}`);
    killAllWorkers();
    void cleanup().finally(() => process.exit(130));
  };
  const cleanup = async () => {
    await broker.waitUntilReachable(60_000).catch((error: Error) => log(`cleanup: ${error.message}; queues and exchanges prefixed ${runId} are left behind`));
    for (const id of runnable) {
      for (const queue of names[id].queues) await broker.deleteQueue(queue);
      await broker.deleteExchange(names[id].exchange);
      for (const exchange of names[id].exchanges) await broker.deleteExchange(exchange);
    }
    await database?.drop().catch((error: Error) => log(`could not drop schema: ${error.message}`));
    await broker.close();
  };
  process.once('SIGINT', interrupt);
  process.once('SIGTERM', interrupt);

  try {
    database = await DatabaseAdmin.create(options.postgresUrl, runId.replace(/-/g, '_'), runnable);
    for (const id of runnable) {
      const { queue, retryQueue } = names[id];
      if (retryQueue) await broker.declareRetryTier(queue, retryQueue, options.retryDelayMs);
    }
    const environment = await describeEnvironment(broker, database);
    const ctx: RunContext = { options, runId, names, broker, database, logDir, profileDir, log };
    log(`run ${runId}: scenarios ${options.scenarios.join(',')}; logs in ${logDir}`);

    if (options.soak !== undefined) {
      const results = [];
      for (const id of runnable) results.push(await runSoak(ctx, id));
      const report: SoakReport = { runId, startedAt: started.toISOString(), options, environment, results };
      const markdown = renderSoak(report);
      console.log(`\n${markdown}`);
      if (options.write) log(`written: ${writeResults(`${stamp}-soak`, markdown, report, 'soak')}.{json,md} and bench/RESULTS.md`);
      failures = results.filter((result) => !result.ok).length;
    } else {
      const rounds: ScenarioRound[] = [];
      for (let round = 1; round <= options.rounds; round++) {
        const shift = (round - 1) % runnable.length;
        for (const id of [...runnable.slice(shift), ...runnable.slice(0, shift)]) {
          log(`round ${round}/${options.rounds}: (${id}) ${SCENARIOS[id].label}`);
          const reruns: string[] = [];
          let result = await runScenarioRound(ctx, id, round);
          // A broker restarted under the round (another suite's broker-restart tests) voids it: run it again.
          while (!result.ok && result.brokerDisrupted && reruns.length < MAX_RERUNS) {
            reruns.push(result.error ?? 'unknown error');
            log(`  RabbitMQ was restarted during the round (${result.error?.split('\n')[0]}); running it again`);
            result = await runScenarioRound(ctx, id, round);
          }
          if (reruns.length > 0) result.reruns = reruns;
          rounds.push(result);
          if (options.write) partial = savePartial(stamp, { runId, startedAt: started.toISOString(), durationS: (Date.now() - started.getTime()) / 1000, options, environment, scenarios: options.scenarios, unavailable, rounds, interrupted: `after ${rounds.length} of ${options.rounds * runnable.length} scenario rounds` });
          log(result.ok ? `  ${brief(result)}` : `  FAILED: ${result.error}`);
        }
      }
      const report: RunReport = { runId, startedAt: started.toISOString(), durationS: (Date.now() - started.getTime()) / 1000, options, environment, scenarios: options.scenarios, unavailable, rounds };
      const markdown = renderRun(report);
      console.log(`\n${markdown}`);
      if (options.write) log(`written: ${writeResults(stamp, markdown, report, 'run')}.{json,md} and bench/RESULTS.md`);
      if (partial) rmSync(partial, { force: true });
      failures = rounds.filter((round) => !round.ok).length;
    }
  } finally {
    process.removeListener('SIGINT', interrupt);
    process.removeListener('SIGTERM', interrupt);
    killAllWorkers();
    await cleanup();
  }
  if (failures > 0) {
    log(`${failures} scenario run(s) failed; worker logs kept in ${logDir}`);
    return 1;
  }
  rmSync(workDir, { recursive: true, force: true });
  if (profileDir) log(`CPU profiles: ${profileDir} (summarise: node bench/dist/profile-summary.js ${profileDir}/<file>)`);
  log(`done in ${Math.round((Date.now() - started.getTime()) / 1000)} s`);
  return 0;
}

/** The rounds done so far, kept while the run goes on (an interrupted run can still be rendered). */
function savePartial(stamp: string, report: RunReport): string {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const path = join(RESULTS_DIR, `${stamp}.json.tmp`);
  writeFileSync(path, `${JSON.stringify(report, null, 2)}\n`);
  return path;
}

/** Renders a recorded run again (its .md and the RESULTS.md block) from its JSON. */
function rerender(file: string): number {
  const path = /\.json(\.tmp)?$/.test(file) ? file : join(RESULTS_DIR, `${file}.json`);
  const stamp = basename(path).replace(/\.json(\.tmp)?$/, '');
  const data = JSON.parse(readFileSync(path, 'utf8')) as RunReport | SoakReport;
  const soak = 'results' in data;
  const markdown = soak ? renderSoak(data) : renderRun(data);
  console.log(markdown);
  log(`written: ${writeResults(stamp, markdown, undefined, soak ? 'soak' : 'run')}.md and bench/RESULTS.md`);
  return 0;
}

function brief(result: ScenarioRound): string {
  const parts: string[] = [];
  const fmt = (x: number) => Math.round(x).toLocaleString('en-US');
  if (result.e2e) parts.push(`e2e ${fmt(result.e2e)}/s`);
  if (result.publish) parts.push(`publish ${fmt(result.publish)}/s`);
  if (result.drain) parts.push(`drain ${fmt(result.drain)}/s`);
  if (result.latency?.delivery) parts.push(`delivery p50/p99 ${result.latency.delivery.p50.toFixed(1)}/${result.latency.delivery.p99.toFixed(1)} ms`);
  if (result.latency) parts.push(`start p50/p99 ${result.latency.handlerStart.p50.toFixed(1)}/${result.latency.handlerStart.p99.toFixed(1)} ms, ack p50/p99 ${result.latency.ack.p50.toFixed(1)}/${result.latency.ack.p99.toFixed(1)} ms`);
  if (result.failure) parts.push(`healthy with failures ${fmt(result.failure.healthyRate)}/s (${(result.failure.ratio ?? NaN).toFixed(2)}×)`);
  if (result.rssMb) parts.push(`RSS ${result.rssMb.toFixed(0)} MiB`);
  if (process.env.BENCH_TIMINGS) parts.push(`\n          timings: ${Object.entries(result.timings).map(([step, s]) => `${step} ${s.toFixed(1)} s`).join(', ')}`);
  return parts.join(', ');
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error('[bench] failed:', error);
    killAllWorkers();
    process.exit(1);
  },
);
