/**
 * The chaos run: a publisher process commits CHAOS_EVENTS UserCreated / UserUpdated events
 * through the outbox while CHAOS_CONSUMERS billing processes compete on the same queues, and
 * this controller restarts the broker (stop_app / start_app), SIGKILLs and restarts a billing
 * process, and restarts PostgreSQL, spread over the publisher's progress. Then, within a bounded
 * wait, every event's effect must be present exactly once, the poison events (and only they)
 * in the dead-letter queues, every other queue empty and the outbox drained. It prints one
 * summary line; the processes' logs stay in CHAOS_LOG_DIR when the run fails.
 * Settings: chaos-plan.ts (CHAOS_* variables). Run with `npm run test:reliability`.
 */
import { appendFileSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DataSource } from 'typeorm';
import { deadLetterQueueName, SYNC_ENTITIES, SYNC_HEADERS } from '../../lib/index.js';
import { Broker } from '../support/broker.js';
import { type QueueDepth, queueDepths, startBroker, stopBroker } from '../support/broker-control.js';
import { spawnTs, type TsProcess } from '../support/child-process.js';
import { restartPostgres, startPostgres } from '../support/database-control.js';
import { POSTGRES_URL } from '../support/env.js';
import { unique, waitFor } from '../support/wait.js';
import { CHAOS_EVENT_TYPES, type ChaosEventType, ChaosPlan, chaosConfig, chaosNames } from './chaos-plan.js';

const config = chaosConfig(process.env, join(tmpdir(), 'nestjs-event-sync-chaos'));
const TEARDOWN_TIMEOUT_MS = 180_000;
const START_TIMEOUT_MS = 90_000;
/** A broker outage that outlasts this is not waiting for the publisher any more: end it. */
const OUTAGE_TIMEOUT_MS = 60_000;
/** Polls (2 s apart) that must find the run quiescent without it having settled before the wait gives up early. */
const QUIESCENT_POLLS = 5;

type FaultKind = 'broker' | 'consumer' | 'postgres';

/**
 * The faults in the order they fire, each kind spread evenly and the kinds interleaved; fault k of
 * F fires once the publisher has committed k/(F+1) of the events, so every fault lands while
 * events flow, however fast this machine is.
 */
function faultSchedule(): Array<{ kind: FaultKind; atCommitted: number }> {
  const spread = (kind: FaultKind, count: number, offset: number) => Array.from({ length: count }, (_, j) => ({ kind, position: (j + offset) / count }));
  const faults = [...spread('broker', config.brokerRestarts, 0.25), ...spread('consumer', config.consumerKills, 0.6), ...spread('postgres', config.pgRestarts, 0.45)].sort(
    (a, b) => a.position - b.position,
  );
  return faults.map((fault, k) => ({ kind: fault.kind, atCommitted: Math.floor((config.events * (k + 1)) / (faults.length + 1)) }));
}

interface Snapshot {
  backlog: number;
  processed: Record<ChaosEventType, number>;
  effects: { total: number; distinct: number };
  queues: Record<string, QueueDepth>;
}

describe('chaos run', () => {
  const runId = unique('chaos');
  const names = chaosNames(runId);
  const plan = new ChaosPlan(runId, config.events, config.updatesPerUser, config.poison);
  const runDir = join(config.logDir, runId);
  const queueOf = (type: ChaosEventType) => `${names.service}.${names.consumers[type]}`;
  /** Every process started, killed ones included. */
  const processes: TsProcess[] = [];
  let dataSource: DataSource | undefined;
  let passed = false;

  const note = (message: string) => appendFileSync(join(runDir, 'controller.log'), `${new Date().toISOString()} ${message}\n`);

  afterAll(async () => {
    const problems: string[] = [];
    const attempt = async (what: string, step: () => Promise<unknown>) => {
      try {
        await step();
      } catch (error) {
        problems.push(`${what}: ${(error as Error).message}`);
      }
    };
    // The shared services first: whatever happened, the broker app and PostgreSQL run again.
    await attempt('start the broker', startBroker);
    await attempt('start PostgreSQL', startPostgres);
    await attempt('stop the processes', () => Promise.all(processes.map((child) => child.stop(15_000))));
    await attempt('delete the queues and exchange', async () => {
      const broker = await Broker.connect();
      try {
        await broker.deleteQueues(...(await queueDepths(`${names.service}.`)).keys());
        await broker.deleteExchange(names.exchange);
      } finally {
        await broker.close();
      }
    });
    await attempt('drop the tables and rows', async () => {
      if (!dataSource?.isInitialized) return;
      // The connections may predate a PostgreSQL restart: the first query on a dead one fails, the retry gets a fresh one.
      await waitFor(
        async () => {
          for (const table of Object.values(names.tables)) await dataSource!.query(`DROP TABLE IF EXISTS ${table}`);
          await dataSource!.query('DELETE FROM sync_processed_events WHERE consumer = ANY($1)', [Object.values(names.consumers)]);
          await dataSource!.query('DELETE FROM sync_outbox WHERE source = $1', [names.publisher]);
          return true;
        },
        { timeoutMs: 30_000, intervalMs: 500, what: 'the cleanup queries' },
      );
      await dataSource.destroy();
    });
    if (passed && !config.keepLogs) rmSync(runDir, { recursive: true, force: true });
    else process.stderr.write(`chaos: logs of this run are in ${runDir}\n`);
    if (problems.length > 0) throw new Error(`chaos teardown: ${problems.join('; ')}`);
  }, TEARDOWN_TIMEOUT_MS);

  it(
    `applies every one of ${config.events} events exactly once through broker restarts, consumer kills and PostgreSQL restarts`,
    async () => {
      const started = Date.now();
      const deadline = started + config.timeoutMs;
      const remaining = () => Math.max(1_000, deadline - Date.now());
      mkdirSync(runDir, { recursive: true });
      note(`run ${runId}: ${JSON.stringify(config)}`);

      dataSource = await new DataSource({ type: 'postgres', url: POSTGRES_URL, entities: SYNC_ENTITIES, synchronize: true, logging: false }).initialize();
      const { users, effects, customers } = names.tables;
      await dataSource.query(`CREATE TABLE ${users} (id varchar(200) PRIMARY KEY, name varchar(200) NOT NULL, version int NOT NULL)`);
      // No unique key on event_id: an event applied twice is two rows.
      await dataSource.query(
        `CREATE TABLE ${effects} (id bigserial PRIMARY KEY, event_id varchar(200) NOT NULL, consumer varchar(200) NOT NULL, event_type varchar(50) NOT NULL, ` +
          `user_id varchar(200) NOT NULL, version int NOT NULL, instance varchar(50) NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
      );
      await dataSource.query(`CREATE INDEX ${effects}_event_id ON ${effects} (event_id)`);
      await dataSource.query(`CREATE TABLE ${customers} (id varchar(200) PRIMARY KEY, name varchar(200) NOT NULL, version int NOT NULL)`);

      // What the consumers' logs say, over every process (killed ones included).
      const seen = { duplicates: 0, retried: 0 };
      const consumers: TsProcess[] = [];
      const incarnations: number[] = [];
      const startConsumer = (slot: number): TsProcess => {
        incarnations[slot] = (incarnations[slot] ?? 0) + 1;
        const name = `consumer-${String.fromCharCode(97 + slot)}${incarnations[slot]}`;
        const consumer = spawnTs('test/reliability/processes/chaos-consumer.ts', {
          name,
          env: { RUN_ID: runId, DATABASE_URL: POSTGRES_URL, INSTANCE: name, CHAOS_HANDLER_MS: String(config.handlerMs) },
          logFile: join(runDir, `${name}.log`),
        });
        consumer.onLine((line) => {
          if (line.includes(': duplicate, already processed;')) seen.duplicates += 1;
          else if (/: failed on attempt \d+ of \d+ /.test(line)) seen.retried += 1;
        });
        processes.push(consumer);
        consumers[slot] = consumer;
        return consumer;
      };

      // The consumers first: their queues are bound before the first event leaves the outbox.
      for (let slot = 0; slot < config.consumers; slot++) startConsumer(slot);
      await Promise.all(consumers.map((consumer) => consumer.waitForLine(/^READY$/, START_TIMEOUT_MS)));

      const publisherState = { committed: 0, txRetries: 0, alreadyCommitted: 0, done: false };
      const publisher = spawnTs('test/reliability/processes/chaos-publisher.ts', {
        name: 'publisher',
        env: {
          RUN_ID: runId,
          DATABASE_URL: POSTGRES_URL,
          CHAOS_EVENTS: String(config.events),
          CHAOS_UPDATES_PER_USER: String(config.updatesPerUser),
          CHAOS_POISON: String(config.poison),
          CHAOS_RATE: String(config.rate),
          CHAOS_LANES: String(config.lanes),
        },
        logFile: join(runDir, 'publisher.log'),
      });
      processes.push(publisher);
      publisher.onLine((line) => {
        const progress = /^(PROGRESS|DONE) committed=(\d+) txRetries=(\d+)(?: alreadyCommitted=(\d+))?/.exec(line);
        if (!progress) return;
        publisherState.committed = Number(progress[2]);
        publisherState.txRetries = Number(progress[3]);
        if (progress[1] === 'DONE') {
          publisherState.alreadyCommitted = Number(progress[4]);
          publisherState.done = true;
        }
      });

      /** A process that ended without being told to is a failure of the run: say which, and where its log is. */
      const allRunning = () => publisher.running && consumers.every((consumer) => consumer.running);
      const assertRunning = () => {
        for (const child of [publisher, ...consumers]) {
          if (!child.running) throw new Error(`${child.name} exited on its own (log: ${join(runDir, `${child.name}.log`)})`);
        }
      };

      const faults = { broker: 0, consumer: 0, postgres: 0 };
      const inject: Record<FaultKind, () => Promise<void>> = {
        async broker() {
          const before = publisherState.committed;
          await stopBroker();
          try {
            // The outage lasts while the publisher commits CHAOS_OUTAGE_EVENTS events its relay cannot send.
            await waitFor(() => publisherState.committed - before >= config.outageEvents || publisherState.done || !publisher.running, {
              timeoutMs: OUTAGE_TIMEOUT_MS,
              intervalMs: 100,
              what: `${config.outageEvents} events committed during the broker outage`,
            });
          } finally {
            await startBroker();
          }
        },
        async consumer() {
          const slot = faults.consumer % consumers.length;
          const victim = consumers[slot];
          victim.child.kill('SIGKILL');
          const exit = await victim.exited;
          expect(exit.signal).toBe('SIGKILL');
          await startConsumer(slot).waitForLine(/^READY$/, START_TIMEOUT_MS);
        },
        async postgres() {
          await restartPostgres();
        },
      };

      for (const fault of faultSchedule()) {
        await waitFor(() => publisherState.committed >= fault.atCommitted || publisherState.done || !publisher.running, {
          timeoutMs: remaining(),
          intervalMs: 100,
          what: `${fault.atCommitted} events committed before the next fault (${fault.kind})`,
        });
        assertRunning();
        note(`fault ${fault.kind}: start at committed=${publisherState.committed}`);
        await inject[fault.kind]();
        faults[fault.kind] += 1;
        note(`fault ${fault.kind}: over at committed=${publisherState.committed}`);
      }
      await waitFor(() => publisherState.done || !publisher.running, { timeoutMs: remaining(), intervalMs: 200, what: 'the publisher to commit every event' });
      assertRunning();
      note(`publisher done: ${JSON.stringify(publisherState)}`);

      // Until everything has settled: every dedupe row and effect there, the poison in the DLQs, nothing else anywhere.
      const expectedProcessed = { UserCreated: 0, UserUpdated: 0 };
      const expectedDeadLetters = { UserCreated: 0, UserUpdated: 0 };
      for (const event of plan.all()) (event.poison ? expectedDeadLetters : expectedProcessed)[event.eventType] += 1;
      const expectedApplied = expectedProcessed.UserCreated + expectedProcessed.UserUpdated;
      const db = dataSource;
      const snapshot = async (): Promise<Snapshot> => {
        const [{ backlog }] = await db.query('SELECT count(*)::int AS backlog FROM sync_outbox WHERE source = $1 AND published_at IS NULL', [names.publisher]);
        const processedRows: Array<{ consumer: string; n: number }> = await db.query(
          'SELECT consumer, count(*)::int AS n FROM sync_processed_events WHERE consumer = ANY($1) GROUP BY consumer',
          [Object.values(names.consumers)],
        );
        const [applied] = await db.query(`SELECT count(*)::int AS total, count(DISTINCT event_id)::int AS "distinct" FROM ${effects}`);
        const processed = { UserCreated: 0, UserUpdated: 0 };
        for (const type of CHAOS_EVENT_TYPES) processed[type] = processedRows.find((row) => row.consumer === names.consumers[type])?.n ?? 0;
        return { backlog, processed, effects: applied, queues: Object.fromEntries(await queueDepths(`${names.service}.`)) };
      };
      /** Queues that hold what they should not: anything outside the DLQs, or a DLQ with other than its poison events. */
      const deadLetterQueues = CHAOS_EVENT_TYPES.map((type) => deadLetterQueueName(queueOf(type)));
      const wrongQueues = (state: Snapshot): string[] => {
        const wrong: string[] = [];
        for (const type of CHAOS_EVENT_TYPES) {
          if (!state.queues[queueOf(type)]) wrong.push(`${queueOf(type)} missing`);
          const dlq = state.queues[deadLetterQueueName(queueOf(type))];
          if (!dlq || dlq.ready !== expectedDeadLetters[type] || dlq.unacked !== 0) wrong.push(`${deadLetterQueueName(queueOf(type))}: ${JSON.stringify(dlq)}`);
        }
        for (const [queue, depth] of Object.entries(state.queues)) {
          if (!deadLetterQueues.includes(queue) && depth.ready + depth.unacked > 0) wrong.push(`${queue}: ${JSON.stringify(depth)}`);
        }
        return wrong;
      };
      /**
       * Nothing can change any more: nothing left in the outbox, and no message on any queue or in
       * a consumer's hands (unacked) outside the DLQs. A run that stays this way without having
       * settled has lost or duplicated something; waiting longer would only delay the verdict.
       */
      const quiescent = (state: Snapshot) =>
        publisherState.done &&
        state.backlog === 0 &&
        Object.entries(state.queues).every(([queue, depth]) => deadLetterQueues.includes(queue) || depth.ready + depth.unacked === 0);
      let last: Snapshot | undefined;
      let settled = false;
      let quietPolls = 0;
      try {
        await waitFor(
          async () => {
            if (!allRunning()) return true;
            last = await snapshot();
            settled =
              publisherState.done &&
              last.backlog === 0 &&
              CHAOS_EVENT_TYPES.every((type) => last!.processed[type] === expectedProcessed[type]) &&
              last.effects.total === expectedApplied &&
              wrongQueues(last).length === 0;
            quietPolls = quiescent(last) ? quietPolls + 1 : 0;
            return settled || quietPolls >= QUIESCENT_POLLS;
          },
          { timeoutMs: remaining(), intervalMs: 2_000, what: 'every event applied once, the poison dead-lettered and every other queue empty' },
        );
      } catch (error) {
        note(`did not settle: ${(error as Error).message}`);
      }
      assertRunning();
      note(`settled=${settled}: ${JSON.stringify(last)}`);

      // The state to judge, read once everything has settled (or the time is up).
      const final = await snapshot();
      const appliedRows: Array<{ event_id: string; consumer: string; n: number }> = await db.query(
        `SELECT event_id, consumer, count(*)::int AS n FROM ${effects} GROUP BY event_id, consumer`,
      );
      const appliedCount = new Map<string, number>();
      const appliedBy = new Map<string, string>();
      for (const row of appliedRows) {
        appliedCount.set(row.event_id, (appliedCount.get(row.event_id) ?? 0) + row.n);
        appliedBy.set(row.event_id, row.consumer);
      }
      const events = plan.all();
      const missing = events.filter((event) => !event.poison && !appliedCount.has(event.eventId)).map((event) => event.eventId);
      const appliedTwice = [...appliedCount].filter(([, n]) => n > 1).map(([eventId, n]) => `${eventId} x${n}`);
      const planned = new Map(events.map((event) => [event.eventId, event]));
      const unexpected = [...appliedCount.keys()].filter((eventId) => planned.get(eventId)?.poison !== false);
      const wrongConsumer = [...appliedBy].filter(([eventId, consumer]) => planned.has(eventId) && names.consumers[planned.get(eventId)!.eventType] !== consumer);
      const [{ orphans }] = await db.query(
        `SELECT count(*)::int AS orphans FROM sync_processed_events p WHERE p.consumer = ANY($1) ` +
          `AND NOT EXISTS (SELECT 1 FROM ${effects} e WHERE e.event_id = p.event_id AND e.consumer = p.consumer)`,
        [Object.values(names.consumers)],
      );

      // The customer copy holds each user's newest version that was not poison; the users table, every version committed.
      const newest = new Map<string, number>();
      for (const event of events) if (!event.poison) newest.set(event.userId, Math.max(newest.get(event.userId) ?? -1, event.version));
      const copies: Array<{ id: string; version: number }> = await db.query(`SELECT id, version FROM ${customers}`);
      const staleCopies = copies.filter((copy) => newest.get(copy.id) !== copy.version).map((copy) => `${copy.id} v${copy.version}`);
      const [{ usersCount, versions }] = await db.query(`SELECT count(*)::int AS "usersCount", coalesce(sum(version), 0)::int AS versions FROM ${users}`);
      const [{ outboxRows }] = await db.query('SELECT count(*)::int AS "outboxRows" FROM sync_outbox WHERE source = $1', [names.publisher]);

      // The dead letters themselves: exactly the poison events, each refused as non-retryable.
      const deadLetters: Record<ChaosEventType, string[]> = { UserCreated: [], UserUpdated: [] };
      const reasons = new Set<string>();
      const broker = await Broker.connect();
      try {
        for (const type of CHAOS_EVENT_TYPES) {
          const messages = await broker.takeAll(deadLetterQueueName(queueOf(type)), expectedDeadLetters[type], 15_000).catch(() => []);
          for (const message of messages) {
            deadLetters[type].push(JSON.parse(message.content.toString()).eventId);
            reasons.add(String(message.properties.headers?.[SYNC_HEADERS.reason]));
          }
        }
      } finally {
        await broker.close();
      }
      const poisonOf = (type: ChaosEventType) => events.filter((event) => event.poison && event.eventType === type).map((event) => event.eventId).sort();

      const exits = await Promise.all([publisher, ...consumers].map(async (child) => ({ name: child.name, ...(await child.stop()) })));
      const duration = (Date.now() - started) / 1000;
      const deadLettered = CHAOS_EVENT_TYPES.reduce((sum, type) => sum + (final.queues[deadLetterQueueName(queueOf(type))]?.ready ?? 0), 0);
      const summary =
        `chaos: events=${config.events} committed=${publisherState.committed} applied=${final.effects.total} missing=${missing.length} ` +
        `appliedTwice=${appliedTwice.length} duplicatesSkipped=${seen.duplicates} deadLettered=${deadLettered} retried=${seen.retried} ` +
        `publisherTxRetries=${publisherState.txRetries} brokerRestarts=${faults.broker} consumerKills=${faults.consumer} pgRestarts=${faults.postgres} ` +
        `duration=${duration.toFixed(1)}s`;
      note(summary);
      process.stdout.write(`${summary}\n`);

      expect({ settled, last }).toMatchObject({ settled: true });
      expect(faults).toEqual({ broker: config.brokerRestarts, consumer: config.consumerKills, postgres: config.pgRestarts });
      expect(publisherState).toMatchObject({ committed: config.events, done: true });
      const lastVersions = Array.from({ length: plan.users }, (_, user) => plan.eventsOfUser(user).length - 1).reduce((sum, version) => sum + version, 0);
      expect({ users: usersCount, versions }).toEqual({ users: plan.users, versions: lastVersions });
      expect({ outboxRows, backlog: final.backlog }).toEqual({ outboxRows: config.events, backlog: 0 });
      // Every effect exactly once: none missing, none twice, none for a poison event, each by its own handler.
      expect({ missing: missing.slice(0, 10), appliedTwice: appliedTwice.slice(0, 10), unexpected: unexpected.slice(0, 10), wrongConsumer: wrongConsumer.slice(0, 10) }).toEqual({
        missing: [],
        appliedTwice: [],
        unexpected: [],
        wrongConsumer: [],
      });
      expect(final.effects).toEqual({ total: expectedApplied, distinct: expectedApplied });
      expect(final.processed).toEqual(expectedProcessed);
      expect(orphans).toBe(0);
      expect(staleCopies.slice(0, 10)).toEqual([]);
      expect(copies.length).toBe(newest.size);
      // Nothing on any queue but the deliberate dead letters.
      expect(wrongQueues(final)).toEqual([]);
      expect({ UserCreated: deadLetters.UserCreated.sort(), UserUpdated: deadLetters.UserUpdated.sort() }).toEqual({
        UserCreated: poisonOf('UserCreated'),
        UserUpdated: poisonOf('UserUpdated'),
      });
      expect([...reasons].filter((reason) => reason !== 'non-retryable')).toEqual([]);
      // Shut down cleanly after all that.
      expect(exits.filter((exit) => exit.code !== 0)).toEqual([]);
      passed = true;
    },
    config.timeoutMs + 120_000,
  );
});
