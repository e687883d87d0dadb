import { deadLetterQueueName, partitionTopologyNames, retryQueueName } from 'nestjs-event-sync';
import { BENCH_PARTITIONS, type ScenarioId } from '../workers/runtime/protocol.js';
import { golevelupScript, workerScript } from './paths.js';

export interface Scenario {
  id: ScenarioId;
  label: string;
  /** What the handler and the retry tier are, for the report. */
  description: string;
  consumerScript: string;
  publisherScript: string;
  database: 'postgres' | 'sqlite';
  /** Scenarios d–i run this library, whose topology and dedupe table the library owns. */
  library: boolean;
  /** Failed events wait out the retry delay in place, holding one of this many partitions. */
  retriesInPlaceOver?: number;
}

export const SCENARIOS: Record<ScenarioId, Scenario> = {
  a: {
    id: 'a',
    label: 'raw amqplib',
    description: 'ConfirmChannel publish; consume + manual ack after a pg Pool upsert; failures nacked to a TTL retry queue (hand-made); no dedupe',
    consumerScript: workerScript('raw-amqplib.consumer'),
    publisherScript: workerScript('raw-amqplib.publisher'),
    database: 'postgres',
    library: false,
  },
  b: {
    id: 'b',
    label: 'Nest RMQ transport',
    description: 'ClientRMQ.emit (confirmed); ServerRMQ @EventPattern, noAck: false, TypeORM repository upsert, manual ack; failures nacked to a TTL retry queue; no dedupe',
    consumerScript: workerScript('nest-rmq.consumer'),
    publisherScript: workerScript('nest-rmq.publisher'),
    database: 'postgres',
    library: false,
  },
  c: {
    id: 'c',
    label: '@golevelup/nestjs-rabbitmq',
    description: 'AmqpConnection.publish (confirmed); @RabbitSubscribe, TypeORM repository upsert, acked on return; errorBehavior NACK to a TTL retry queue via queue arguments; no dedupe',
    consumerScript: golevelupScript('golevelup.consumer'),
    publisherScript: golevelupScript('golevelup.publisher'),
    database: 'postgres',
    library: false,
  },
  d: {
    id: 'd',
    label: 'nestjs-event-sync (PostgreSQL)',
    description: 'SyncPublisher.publish; @OnEvent upsert through ctx.manager in the dedupe transaction; library retry tier',
    consumerScript: workerScript('event-sync.consumer'),
    publisherScript: workerScript('event-sync.publisher'),
    database: 'postgres',
    library: true,
  },
  e: {
    id: 'e',
    label: 'nestjs-event-sync (SQLite)',
    description: 'as d, dedupe and upsert on SQLite (better-sqlite3 file in a temp dir)',
    consumerScript: workerScript('event-sync.consumer'),
    publisherScript: workerScript('event-sync.publisher'),
    database: 'sqlite',
    library: true,
  },
  f: {
    id: 'f',
    label: 'nestjs-event-sync outbox (PostgreSQL)',
    description: 'publisher.transaction(manager => publisher.publish(...)) through the outbox; consumer as d',
    consumerScript: workerScript('event-sync.consumer'),
    publisherScript: workerScript('event-sync.publisher'),
    database: 'postgres',
    library: true,
  },
  g: {
    id: 'g',
    label: "nestjs-event-sync, ordering: 'key' (PostgreSQL)",
    description: "as d, with the stale-event guard: published with { key, sequence }, the handler's offset row checked and advanced in its transaction",
    consumerScript: workerScript('event-sync.consumer'),
    publisherScript: workerScript('event-sync.publisher'),
    database: 'postgres',
    library: true,
  },
  h: {
    id: 'h',
    label: 'nestjs-event-sync, partitions: 4 (PostgreSQL)',
    description: 'as d, with partitions: 4: events spread over 4 partition queues by key, one event at a time per partition (no batches), failures retried in place',
    consumerScript: workerScript('event-sync.consumer'),
    publisherScript: workerScript('event-sync.publisher'),
    database: 'postgres',
    library: true,
    retriesInPlaceOver: BENCH_PARTITIONS,
  },
  i: {
    id: 'i',
    label: "nestjs-event-sync, (a)'s SQL (PostgreSQL)",
    description: "as d, but the handler runs (a)'s upsert statement through ctx.manager.query instead of TypeORM's upsert builder: the same handler work as (a), so (i) against (a) is what the library's guarantees cost",
    consumerScript: workerScript('event-sync.consumer'),
    publisherScript: workerScript('event-sync.publisher'),
    database: 'postgres',
    library: true,
  },
  j: {
    id: 'j',
    label: 'nestjs-event-sync, random UUIDv4 event ids (PostgreSQL)',
    description:
      'as d, but published with `eventId: randomUUID()` (random ids, as from a producer that sets its own, or this library before its ids were UUIDv7): with `--prefill`, (j) against (d) is what random ids cost a dedupe table that holds earlier events',
    consumerScript: workerScript('event-sync.consumer'),
    publisherScript: workerScript('event-sync.publisher'),
    database: 'postgres',
    library: true,
  },
};

/** Names one scenario uses in one run: all unique to the run, all deleted afterwards. */
export interface ScenarioNames {
  exchange: string;
  queue: string;
  /** Scenarios a–c: the hand-made retry tier. */
  retryQueue?: string;
  service?: string;
  consumerName?: string;
  usersTable: string;
  /** Where the events wait for the consumer: the queue, or scenario h's partition queues. */
  watched: string[];
  /** Every queue to purge between rounds and delete at the end. */
  queues: string[];
  /** Exchanges to delete at the end besides `exchange`. */
  exchanges: string[];
}

export const CONSUMER_NAME = 'BenchUsers';

export function scenarioNames(runId: string, id: ScenarioId, retryDelayMs: number): ScenarioNames {
  const usersTable = `users_${id}`;
  if (!SCENARIOS[id].library) {
    const queue = `${runId}.${id}.users`;
    const retryQueue = `${queue}.retry.${retryDelayMs}`;
    return { exchange: `${runId}.${id}.events`, queue, retryQueue, usersTable, watched: [queue], queues: [queue, retryQueue], exchanges: [] };
  }
  const service = `${runId}-${id}`;
  const queue = `${service}.${CONSUMER_NAME}`;
  const library = { exchange: `${runId}.${id}.events`, queue, service, consumerName: CONSUMER_NAME, usersTable };
  if (id === 'h') {
    const { partitionQueues, queues, exchanges } = partitionTopologyNames(queue, BENCH_PARTITIONS);
    return { ...library, watched: partitionQueues, queues, exchanges };
  }
  return { ...library, watched: [queue], queues: [queue, retryQueueName(queue, retryDelayMs), deadLetterQueueName(queue)], exchanges: [] };
}
