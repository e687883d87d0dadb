import os from 'node:os';
import { join } from 'node:path';
import type { ExpectationResult, LatencySummary, ProcessStats, PublishResult, ScenarioId, WorkerConfig } from '../workers/runtime/protocol.js';
import type { BrokerAdmin } from './broker-admin.js';
import { WorkerProcess } from './child.js';
import { type CpuPerEvent, cpuPerEvent, readCpu } from './cpu.js';
import type { DatabaseAdmin } from './database-admin.js';
import type { BenchOptions, Metric } from './options.js';
import { SCENARIOS, type ScenarioNames } from './scenarios.js';
import { rate } from './stats.js';

/** Nest logger levels of every Nest-based worker: no per-event debug lines, failures still logged. */
export const LOG_LEVELS: WorkerConfig['logLevels'] = ['error', 'warn'];
const READY_TIMEOUT_MS = 60_000;
const IDLE_TIMEOUT_MS = 30_000;

export interface RunContext {
  options: BenchOptions;
  runId: string;
  names: Partial<Record<ScenarioId, ScenarioNames>>;
  broker: BrokerAdmin;
  database: DatabaseAdmin;
  logDir: string;
  profileDir?: string;
  log(line: string): void;
}

/** One scenario's figures in one round. Rates in events/s, latencies in ms, RSS in MiB. */
export interface ScenarioRound {
  scenario: ScenarioId;
  round: number;
  ok: boolean;
  error?: string;
  e2e?: number;
  publish?: number;
  drain?: number;
  /** `consumerRate`: events/s from the first publish to the last ack; below the offered rate, latency is mostly queueing. */
  /** `delivery` (publish -> the client's consume callback) is missing from runs recorded before it was measured. */
  latency?: { handlerStart: LatencySummary; delivery?: LatencySummary; ack: LatencySummary; publisherRate: number; consumerRate?: number };
  /** Peak RSS of the consumer of the e2e phase (or of the drain phase without e2e). */
  rssMb?: number;
  failure?: { healthyRate: number; ratio?: number; retried: number; allAckedAfterS: number };
  /** CPU per event of the consumer, the publisher, RabbitMQ and PostgreSQL over the drain and the latency phase (µs). */
  cpu?: { e2e?: CpuPerEvent; publish?: CpuPerEvent; drain?: CpuPerEvent; latency?: CpuPerEvent };
  /** Bytes of PostgreSQL write-ahead log per event (the whole server's, as its CPU is), scenarios on PostgreSQL. */
  wal?: { e2e?: number; drain?: number };
  bodyBytes?: number;
  /** Rows in the users table after the round: one per distinct event. */
  rows?: number;
  /** Wall time of each step (s), process starts and stops included. */
  timings: Record<string, number>;
  /** What the first consumer reported about its settings (for this library: as the library resolved them). */
  consumerSettings?: Record<string, string>;
  /** 1-minute load average of the machine when the round started (other work on it skews the figures). */
  loadAverage?: number;
  /** RabbitMQ went away during the round (restarted by something else): its figures are void. */
  brokerDisrupted?: boolean;
  /** Errors of earlier attempts of this round that a broker restart voided. */
  reruns?: string[];
  /** Phases asked for but not run, and why. */
  skipped?: string[];
}

/** Every phase of one scenario in one round, each with its own processes where it matters. */
export async function runScenarioRound(ctx: RunContext, id: ScenarioId, round: number): Promise<ScenarioRound> {
  const { options, broker } = ctx;
  const names = ctx.names[id]!;
  const result: ScenarioRound = { scenario: id, round, ok: false, timings: {} };
  const want = (metric: Metric) => options.metrics.includes(metric);
  const workers: WorkerProcess[] = [];
  const tag = `${ctx.runId}-r${round}`;
  const events = options.events;
  const burstTimeout = 60_000 + events * 5;
  const awaitTimeout = 60_000 + events * 10 + options.retryDelayMs * 3;
  let seq = 0;
  let expectedRows = 0;

  const timed = async <T>(step: string, work: () => Promise<T>): Promise<T> => {
    const began = Date.now();
    try {
      return await work();
    } finally {
      result.timings[step] = (result.timings[step] ?? 0) + (Date.now() - began) / 1000;
    }
  };
  const walPosition = () => (SCENARIOS[id].database === 'postgres' ? ctx.database.walPosition() : Promise.resolve(undefined));
  const start = (role: 'consumer' | 'publisher', phase: string, extra: Partial<WorkerConfig> = {}) =>
    timed(`start ${role}s`, async () => {
      const worker = await startWorker(ctx, id, role, round, phase, extra);
      workers.push(worker);
      return worker;
    });
  const startPair = async (phase: string, extra: Partial<WorkerConfig> = {}) => {
    const [consumer, publisher] = await Promise.allSettled([start('consumer', phase, extra), start('publisher', phase)]);
    if (consumer.status === 'rejected') throw consumer.reason;
    if (publisher.status === 'rejected') throw publisher.reason;
    return { consumer: consumer.value, publisher: publisher.value };
  };
  const stopped = async (...stopping: Array<WorkerProcess | undefined>) => {
    if (!stopping.some(Boolean)) return;
    await timed('stop workers', async () => {
      await Promise.all(stopping.map((worker) => worker?.stop()));
      await broker.waitFor(names.watched, 'empty, no consumer', (state) => state.messages === 0 && state.consumers === 0, IDLE_TIMEOUT_MS);
    });
  };

  let disconnects = broker.disconnects;
  try {
    // Another suite may restart the broker (broker-restart tests): start on a reachable one.
    await broker.waitUntilReachable(120_000);
    disconnects = broker.disconnects;
    result.loadAverage = os.loadavg()[0];
    for (const queue of names.queues) await broker.purge(queue);
    await ctx.database.reset(id);
    if (options.prefill > 0 && SCENARIOS[id].library && SCENARIOS[id].database === 'postgres') {
      await timed('prefill', () => ctx.database.prefillProcessed(names.consumerName!, options.prefill, id === 'j' ? 'v4' : 'v7'));
    }
    // The consumer declares its queue: a subset that publishes before any consumer ran needs one first.
    if (!want('e2e') && !(await broker.state(names.watched))) await stopped(await start('consumer', 'setup'));
    let publisher: WorkerProcess | undefined;
    let consumer: WorkerProcess | undefined;

    // The smoke loads the drain phase's consumer while e2e runs (it only checks delivery, and
    // loading a worker ahead saves most of its start-up); measured runs load nothing alongside.
    const drainExpectation = { fromSeq: seq + (want('e2e') ? events : 0), count: events, failEvery: 0, latency: false };
    const drainPreload = options.smoke && want('drain') ? spawnWorker(ctx, id, 'consumer', round, 'drain', { expect: drainExpectation }) : undefined;
    drainPreload?.then((worker) => workers.push(worker), () => undefined);

    if (want('e2e')) {
      ({ consumer, publisher } = await startPair('e2e'));
      result.consumerSettings = consumer.info;
      await consumer.request('expect', { fromSeq: seq, count: events, failEvery: 0, latency: false }, 10_000);
      const pids = { consumer: consumer.pid, publisher: publisher.pid };
      const walBefore = await walPosition();
      const cpuBefore = readCpu(pids);
      const { published, done } = await timed('e2e', async () => ({
        published: await publisher!.request<PublishResult>('burst', { tag, fromSeq: seq, count: events, window: options.window }, burstTimeout),
        done: await awaitDone(consumer!, awaitTimeout),
      }));
      (result.cpu ??= {}).e2e = cpuPerEvent(cpuBefore, readCpu(pids), events);
      if (walBefore !== undefined) (result.wal ??= {}).e2e = (await ctx.database.walBytesSince(walBefore)) / events;
      result.e2e = rate(events, published.firstPublishAt, done.lastAckAt);
      result.rssMb = (await consumer.request<ProcessStats>('stats', undefined, 10_000)).maxRssMb;
      result.bodyBytes = done.bodyBytes;
      seq += events;
      expectedRows += events;
      await stopped(consumer);
      consumer = undefined;
    }

    if (want('publish') || want('drain')) {
      publisher ??= await start('publisher', 'publish');
      const cpuBefore = readCpu({ publisher: publisher.pid });
      const published = await timed('publish', () => publisher!.request<PublishResult>('burst', { tag, fromSeq: seq, count: events, window: options.window }, burstTimeout));
      if (want('publish')) {
        result.publish = rate(events, published.firstPublishAt, published.lastConfirmAt);
        (result.cpu ??= {}).publish = cpuPerEvent(cpuBefore, readCpu({ publisher: publisher.pid }), events);
      }
      await broker.waitFor(names.watched, `${events} messages ready`, (state) => state.messages >= events, IDLE_TIMEOUT_MS);
      if (want('drain')) {
        consumer = drainPreload
          ? await timed('start consumers', async () => (await drainPreload).boot())
          : await start('consumer', 'drain', { expect: drainExpectation });
        result.consumerSettings ??= consumer.info;
        const walBefore = await walPosition();
        const cpuBefore = readCpu({ consumer: consumer.pid });
        const done = await timed('drain', () => awaitDone(consumer!, awaitTimeout));
        (result.cpu ??= {}).drain = cpuPerEvent(cpuBefore, readCpu({ consumer: consumer.pid }), events);
        if (walBefore !== undefined) (result.wal ??= {}).drain = (await ctx.database.walBytesSince(walBefore)) / events;
        result.drain = rate(events, done.consumeStartedAt ?? done.firstStartAt, done.lastAckAt);
        result.rssMb ??= (await consumer.request<ProcessStats>('stats', undefined, 10_000)).maxRssMb;
        result.bodyBytes ??= done.bodyBytes;
        expectedRows += events;
      } else {
        for (const queue of names.watched) await broker.purge(queue);
      }
      seq += events;
    }

    if (want('latency')) {
      const count = Math.round(options.rate * options.duration);
      publisher ??= await start('publisher', 'latency');
      consumer ??= await start('consumer', 'latency');
      await consumer.request('expect', { fromSeq: seq, count, failEvery: 0, latency: true }, 10_000);
      const pids = { consumer: consumer.pid, publisher: publisher.pid };
      const cpuBefore = readCpu(pids);
      const { published, done } = await timed('latency', async () => ({
        published: await publisher!.request<PublishResult>('steady', { tag, fromSeq: seq, rate: options.rate, durationMs: options.duration * 1000 }, options.duration * 1000 + burstTimeout),
        done: await awaitDone(consumer!, awaitTimeout),
      }));
      // Every handler start sampled must have its delivery time, or the two columns describe different events.
      if (done.delivery?.n !== done.handlerStart!.n) {
        throw new Error(`latency: ${done.handlerStart!.n} handler starts sampled, ${done.delivery?.n ?? 0} delivery times: the handler got message objects the consume callback did not see`);
      }
      result.latency = {
        handlerStart: done.handlerStart!,
        delivery: done.delivery,
        ack: done.ack!,
        publisherRate: rate(count, published.firstPublishAt, published.lastConfirmAt),
        consumerRate: rate(count, published.firstPublishAt, done.lastAckAt),
      };
      (result.cpu ??= {}).latency = cpuPerEvent(cpuBefore, readCpu(pids), count);
      seq += count;
      expectedRows += count;
    }
    const failEvery = Math.max(1, Math.round(100 / options.failPct));
    // Retried in place, the failing events wait out their delay one partition at a time: a
    // phase that needs longer than its timeout for that alone is not run (it would only fail).
    const { retriesInPlaceOver } = SCENARIOS[id];
    const waitInPlaceMs = retriesInPlaceOver ? ((events / failEvery) * options.retryDelayMs) / retriesInPlaceOver : 0;
    const failureWanted = want('failure') && options.failPct > 0;
    const failurePhase = failureWanted && waitInPlaceMs < awaitTimeout / 2;
    if (failureWanted && !failurePhase) {
      (result.skipped ??= []).push(
        `failure: its ${events / failEvery} failing events each hold one of ${retriesInPlaceOver} partitions for the ${options.retryDelayMs} ms retry delay (about ${Math.round(waitInPlaceMs / 1000)} s in all, the phase's timeout is ${Math.round(awaitTimeout / 1000)} s); run it with fewer --events or a shorter --retry-delay`,
      );
    }
    // The failure phase compares with e2e, so it gets fresh processes as e2e did; the smoke
    // (which only checks that everything is delivered) reuses the warm ones to stay short.
    const reuse = options.smoke && failurePhase && consumer !== undefined && publisher !== undefined;
    if (!reuse) await stopped(consumer, publisher);

    if (failurePhase) {
      const pair = reuse ? { consumer: consumer!, publisher: publisher! } : await startPair('failure');
      await pair.consumer.request('expect', { fromSeq: seq, count: events, failEvery, latency: false }, 10_000);
      const { published, done } = await timed('failure', async () => ({
        published: await pair.publisher.request<PublishResult>('burst', { tag, fromSeq: seq, count: events, window: options.window }, burstTimeout),
        done: await awaitDone(pair.consumer, awaitTimeout),
      }));
      const healthyRate = rate(done.healthy, published.firstPublishAt, done.lastHealthyAckAt);
      result.failure = {
        healthyRate,
        ratio: result.e2e ? healthyRate / result.e2e : undefined,
        retried: done.retried,
        allAckedAfterS: (done.lastAckAt - published.firstPublishAt) / 1000,
      };
      seq += events;
      expectedRows += events;
      await stopped(pair.consumer, pair.publisher);
    }

    for (const queue of names.queues) {
      const state = await broker.state(queue);
      if (state && state.messages > 0) throw new Error(`${queue} still holds ${state.messages} message(s) after the round`);
    }
    result.rows = await ctx.database.users(id);
    if (result.rows !== expectedRows) throw new Error(`users_${id} has ${result.rows} rows, expected ${expectedRows} (one per event)`);
    if (broker.disconnects !== disconnects) throw new Error('RabbitMQ closed the connections during the round (restarted?): figures void');
    result.ok = true;
  } catch (error) {
    result.error = error instanceof Error ? error.message : String(error);
    result.brokerDisrupted = broker.disconnects !== disconnects;
  } finally {
    for (const worker of workers) worker.kill();
    await Promise.all(workers.map((worker) => worker.exited));
  }
  return result;
}

/** Waits for the consumer's expectation; on a timeout, says how far it got. */
export async function awaitDone(consumer: WorkerProcess, timeoutMs: number): Promise<ExpectationResult> {
  try {
    return await consumer.request<ExpectationResult>('await', undefined, timeoutMs);
  } catch (error) {
    const progress = await consumer.request<{ done: number; count: number; started: number }>('progress', undefined, 5_000).catch(() => undefined);
    const detail = progress ? ` (${progress.done} of ${progress.count} events acked, ${progress.started} handler runs started)` : '';
    throw new Error(`${(error as Error).message}${detail}`);
  }
}

export async function startWorker(ctx: RunContext, id: ScenarioId, role: 'consumer' | 'publisher', round: number | string, phase: string, extra: Partial<WorkerConfig> = {}): Promise<WorkerProcess> {
  return (await spawnWorker(ctx, id, role, round, phase, extra)).boot();
}

/** A worker with its modules loaded, not yet booted (see WorkerProcess.spawn). */
export function spawnWorker(ctx: RunContext, id: ScenarioId, role: 'consumer' | 'publisher', round: number | string, phase: string, extra: Partial<WorkerConfig> = {}): Promise<WorkerProcess> {
  const scenario = SCENARIOS[id];
  const names = ctx.names[id]!;
  const { options } = ctx;
  const config: WorkerConfig = {
    scenario: id,
    role,
    amqpUrl: options.amqpUrl,
    exchange: names.exchange,
    queue: names.queue,
    retryQueue: names.retryQueue,
    service: names.service,
    consumerName: names.consumerName,
    retryDelayMs: options.retryDelayMs,
    prefetch: options.prefetch,
    concurrency: options.concurrency,
    batchSize: options.batchSize,
    queueMode: options.queueMode,
    parallel: options.parallel,
    poolSize: options.pool,
    database: ctx.database.config(id),
    publisherDatabase: ctx.database.postgresConfig,
    usersTable: names.usersTable,
    logLevels: LOG_LEVELS,
    ...extra,
  };
  const name = `r${round}-${id}-${phase}-${role}`;
  const profile = ctx.profileDir ? ['--cpu-prof', `--cpu-prof-dir=${ctx.profileDir}`, `--cpu-prof-name=${name}.cpuprofile`] : [];
  return WorkerProcess.spawn(`${SCENARIOS[id].label} ${role} (${phase}, round ${round})`, role === 'consumer' ? scenario.consumerScript : scenario.publisherScript, config, {
    logFile: join(ctx.logDir, `${name}.log`),
    execArgv: profile,
    readyTimeoutMs: READY_TIMEOUT_MS,
  });
}
