import { Logger } from '@nestjs/common';
import type { ConfirmChannel, ConsumeMessage } from 'amqplib';
import type { EntityManager } from 'typeorm';
import { AbortedTransactionError } from '../errors/aborted-transaction.error.js';
import { HandlerTimeoutError } from '../errors/handler-timeout.error.js';
import { NonRetryableError } from '../errors/non-retryable.error.js';
import type { SyncOutbox } from '../outbox/sync-outbox.js';
import { driverErrorOf, isStorableId, isTransientConflict } from '../persistence/dialect.js';
import type { InboxStore } from '../persistence/inbox.store.js';
import { holdWritesForOneTurn } from '../persistence/write-hold.js';
import type { ResolvedSyncOptions } from '../interfaces/sync-module-options.interface.js';
import type { SyncMetrics } from '../sync.metrics.js';
import { partitionExchangeName } from '../transport/topology.js';
import type { ConsumerDefinition } from './consumer-definition.js';
import { EventContext } from './event-context.js';
import { HandlerRun } from './handler-run.js';
import type { RunIntake } from './run-intake.js';
import type { IncomingEvent } from './incoming-event.js';
import { attemptOf, parseMessage } from './parse-message.js';
import type { DeliveryTracker } from './delivery-tracker.js';
import { CopyReturnedError, type Failure, failureOf, Settler } from './settler.js';

/**
 * The consume pipeline, one small step each: parse -> dedupe + handle (one transaction) ->
 * settle (ack, retry tier, or dead-letter). It never throws: every message ends settled.
 */
export class EventProcessor {
  private readonly logger = new Logger('SyncConsumer');
  private readonly settler = new Settler();
  private readonly warnedIdSources = new Set<string>();
  /** Handlers whose last batch had a failing member: their next batches run isolated. */
  private readonly failingLately = new WeakSet<ConsumerDefinition>();

  constructor(
    private readonly inbox: InboxStore,
    private readonly outbox: SyncOutbox,
    private readonly metrics: SyncMetrics,
    private readonly options: Pick<ResolvedSyncOptions, 'exchange' | 'maxMessageBytes'>,
  ) {}

  /** Called when a channel opens, before its first delivery: lets batches on it be acked with one multiple ack. */
  trackDeliveries(channel: ConfirmChannel): DeliveryTracker {
    return this.settler.track(channel);
  }

  /** Hands a delivery that was never started back to the broker (shutdown). */
  requeue(channel: ConfirmChannel, message: ConsumeMessage): void {
    this.settler.requeue(channel, message);
  }

  /**
   * Settles one delivery. A partitioned handler's failures retry in place (see `handleInPlace`);
   * `signal` aborts such a wait (the partition is being released), which hands the message back.
   */
  async process(channel: ConfirmChannel, message: ConsumeMessage, definition: ConsumerDefinition, signal?: AbortSignal): Promise<void> {
    try {
      if (message.content.length > this.options.maxMessageBytes) {
        this.metrics.increment('malformed', definition.consumer);
        return await this.deadLetter(channel, message, definition, 'too-large', attemptOf(message), {
          name: 'MessageTooLarge',
          message: `body is ${message.content.length} bytes, more than maxMessageBytes (${this.options.maxMessageBytes}); not parsed`,
        }, describeRaw(message));
      }
      const parsed = parseMessage(message);
      if (!parsed.ok) {
        this.metrics.increment('malformed', definition.consumer);
        return await this.deadLetter(channel, message, definition, 'malformed', attemptOf(message), { name: 'MalformedMessage', message: parsed.message }, describeRaw(message));
      }
      const event = parsed.event;
      this.warnOnForeignId(event, definition);
      if (!definition.eventTypes.includes(event.eventType)) {
        if (await this.dropStaleBinding(channel, message, definition, event)) return;
        return await this.deadLetter(channel, message, definition, 'unhandled-event-type', event.attempt, {
          name: 'UnhandledEventType',
          message: `${definition.label} subscribes to ${definition.eventTypes.join(', ')}, not ${event.eventType}`,
        }, describe(event));
      }
      if (definition.ordering === 'key' && !isOrdered(event)) {
        return await this.deadLetter(channel, message, definition, 'unordered', event.attempt, {
          name: 'UnorderedEvent',
          message: `${definition.label} has ordering: 'key', but the event has no ${event.key === undefined ? 'key' : !isStorableId(event.key) ? 'usable key (1 to 200 characters, no NUL)' : 'sequence (a positive integer)'}: publish it with { key, sequence }`,
        }, describe(event));
      }
      if (definition.partitions) await this.handleInPlace(channel, message, definition, event, signal);
      else await this.handle(channel, message, definition, event);
    } catch (error) {
      this.requeueUnsettled(channel, message, definition, error);
    }
  }

  /**
   * Several waiting deliveries at once: the well-formed ones run in one transaction (one dedupe
   * insert, one commit, then one ack each); everything else takes the single-message path. If a
   * handler fails, the batch rolls back, that event alone goes the retry way (it is not run
   * again now), and the others run again as a new batch: every event still commits, retries and
   * dead-letters on its own. A failure that cannot be pinned on one handler (the database, the
   * commit) falls back to one transaction per event. With `intake`, a parallel handler's batch
   * also takes the deliveries that join it while it runs (see RunIntake), even a batch of one.
   */
  async processBatch(channel: ConfirmChannel, messages: ConsumeMessage[], definition: ConsumerDefinition, intake?: RunIntake): Promise<void> {
    // Deliveries join only a run that starts its handlers at once: one that runs them in turn
    // would make them wait for the handlers before them.
    const isolated = this.failingLately.has(definition);
    const joinable = definition.parallel && !definition.partitions && !isolated ? intake : undefined;
    if (!joinable) intake?.close();
    try {
      if (definition.partitions || (messages.length === 1 && !joinable)) {
        for (const message of messages) await this.process(channel, message, definition);
        return;
      }
      const batch: Member[] = [];
      for (const message of messages) {
        const event = this.admit(message, definition);
        if (event) batch.push({ message, event });
        else await this.process(channel, message, definition);
      }
      await this.handleBatch(channel, batch, definition, isolated, false, joinable);
    } finally {
      intake?.close();
      for (const message of intake?.leftovers() ?? []) await this.process(channel, message, definition);
    }
  }

  /** The event of a delivery that can run in a batch; undefined for one that takes the single-message path. */
  private admit(message: ConsumeMessage, definition: ConsumerDefinition): IncomingEvent | undefined {
    const parsed = message.content.length > this.options.maxMessageBytes ? undefined : parseMessage(message);
    if (!parsed?.ok || !definition.eventTypes.includes(parsed.event.eventType) || (definition.ordering === 'key' && !isOrdered(parsed.event))) return undefined;
    this.warnOnForeignId(parsed.event, definition);
    return parsed.event;
  }

  /**
   * `isolated`: each handler runs inside a savepoint, so one that throws is rolled back alone
   * (with its dedupe row) and the others commit. Used for what is left of a batch after one of
   * its handlers failed, and for the next batches of that handler until one has no failure; the
   * others take no savepoints, which would cost every event a statement (and, unless the
   * connection is pipelined, a round trip).
   */
  private async handleBatch(channel: ConfirmChannel, batch: Member[], definition: ConsumerDefinition, isolated = false, rest = false, intake?: RunIntake): Promise<void> {
    if (batch.length === 0 || (batch.length === 1 && !intake)) {
      for (const { message, event } of batch) await this.handle(channel, message, definition, event);
      return;
    }
    const failed = new Map<number, unknown>();
    let outcome: { isNew: boolean[]; result: Run[] };
    // What joined before the dedupe insert is sent goes in it; a re-run takes every member.
    const eventIds = (): string[] => {
      for (const message of intake?.take() ?? []) this.enlist(batch, message, definition, intake!);
      return batch.map(({ event }) => event.eventId);
    };
    try {
      outcome = await this.inbox.runBatch(
        definition.consumer,
        eventIds,
        async (manager, isNew) => {
          failed.clear();
          if (definition.parallel && !isolated) return this.runAtOnce(manager, definition, batch, isNew, intake);
          const runs: Run[] = [];
          for (const [index, { message, event }] of batch.entries()) {
            if (!isNew[index]) continue;
            // On a pipelined connection the savepoint is not waited for: it leaves with the
            // handler's first statement, in one write (one round trip per event, not two).
            const marked = isolated ? (await this.inbox.savepoint(manager)).placed : undefined;
            marked?.catch(() => undefined);
            try {
              runs[index] = await this.run(manager, definition, event, message);
              await marked;
            } catch (error) {
              // Without its savepoint there is nothing to roll back to: the whole batch falls back.
              await marked;
              // A lock conflict re-runs the whole batch; an aborted transaction is not this handler's doing.
              if (isTransientConflict(this.inbox.dialect, error) || isAbortedTransaction(error)) throw error;
              // A timed-out run may still be using the connection: only a whole rollback is safe then.
              if (!isolated || error instanceof HandlerTimeoutError) throw new BatchMemberFailed(new Map([[index, error]]));
              await this.inbox.rollbackToSavepoint(manager, definition.consumer, event.eventId);
              failed.set(index, error);
            }
          }
          return runs;
        },
      );
    } catch (error) {
      intake?.close();
      if (error instanceof BatchMemberFailed) {
        this.failingLately.add(definition);
        // The failed events' copies go to their retry tier while the rest runs again: their
        // confirms (a broker's disk write each) need not hold the rest's deliveries.
        const settling = Promise.all([...error.failures].map(([index, cause]) => this.settleFailure(channel, batch[index].message, definition, batch[index].event, cause)));
        // PostgreSQL slows down for everyone once a transaction holds more than 64 subtransactions.
        const rest = batch.filter((_, index) => !error.failures.has(index));
        for (let start = 0; start < rest.length; start += MAX_SAVEPOINTS) await this.handleBatch(channel, rest.slice(start, start + MAX_SAVEPOINTS), definition, true, true);
        await settling;
        return;
      }
      for (const { message, event } of batch) await this.handleSettled(channel, message, definition, event);
      return;
    }
    // The rest of a failed batch committing cleanly says nothing of the next batches.
    if (failed.size > 0) this.failingLately.add(definition);
    else if (!rest) this.failingLately.delete(definition);
    this.settler.ackAll(channel, batch.filter((_, index) => !failed.has(index)).map(({ message }) => message));
    const settling: Array<Promise<void>> = [];
    for (const [index, { message, event }] of batch.entries()) {
      if (failed.has(index)) settling.push(this.settleFailure(channel, message, definition, event, failed.get(index)));
      else this.countOutcome(outcome.isNew[index] ? outcome.result[index] : 'duplicate', event, definition);
    }
    if (outcome.result.some((run) => run?.written > 0)) this.outbox.wake();
    await Promise.all(settling);
  }

  /**
   * `parallel`: every new event's handler starts at once on the batch's connection (pg
   * pipelines their statements, and on PostgreSQL the statements they start in the same turn
   * leave in one write). Waits for all of them before anything is rolled back. The
   * handlers that failed on their own go the retry way and the others run again, isolated (one
   * after another, in savepoints), as do the handler's next batches until one has no failure;
   * an aborted transaction (25P02) is not counted against the handler that met it.
   */
  private async runAtOnce(manager: EntityManager, definition: ConsumerDefinition, batch: Member[], isNew: boolean[], intake?: RunIntake): Promise<Run[]> {
    const runs: Run[] = [];
    const outcomes: Array<Promise<PromiseSettledResult<Run | undefined>>> = [];
    const start = (index: number): void => {
      const { message, event } = batch[index];
      outcomes[index] = settle(isNew[index] ? this.run(manager, definition, event, message) : undefined);
    };
    holdWritesForOneTurn(manager);
    for (let index = 0; index < batch.length; index++) start(index);
    if (intake) {
      const joins: Array<Promise<void>> = [];
      const join = (messages: ConsumeMessage[]): void => void joins.push(this.join(manager, definition, batch, isNew, messages, outcomes, start, intake));
      const early = intake.receive(join);
      if (early.length > 0) join(early);
      // Open while the handlers it started with run, so the commit waits for at most one more handler run.
      await Promise.all(outcomes.slice());
      intake.close();
      await Promise.all(joins);
    }
    const settled = await Promise.all(outcomes);
    const failures = new Map<number, unknown>();
    let aborted: unknown;
    for (const [index, outcome] of settled.entries()) {
      if (outcome.status === 'fulfilled') {
        if (outcome.value) runs[index] = outcome.value;
      } else if (isTransientConflict(this.inbox.dialect, outcome.reason)) {
        throw outcome.reason;
      } else if (isAbortedTransaction(outcome.reason)) {
        aborted ??= outcome.reason;
      } else {
        failures.set(index, outcome.reason);
      }
    }
    if (failures.size > 0) throw new BatchMemberFailed(failures);
    if (aborted !== undefined) throw aborted;
    return runs;
  }

  /**
   * Deliveries that joined a running parallel batch: one dedupe insert for them on the batch's
   * connection, then their handlers start at once. A failed insert counts as their handlers'
   * failure (on PostgreSQL, mostly the transaction aborted by another handler's statement).
   */
  private async join(manager: EntityManager, definition: ConsumerDefinition, batch: Member[], isNew: boolean[], messages: ConsumeMessage[], outcomes: Array<Promise<PromiseSettledResult<Run | undefined>>>, start: (index: number) => void, intake: RunIntake): Promise<void> {
    const first = batch.length;
    for (const message of messages) this.enlist(batch, message, definition, intake);
    const ids = batch.slice(first).map(({ event }) => event.eventId);
    if (ids.length === 0) return;
    let fresh: boolean[];
    try {
      fresh = await this.inbox.markBatch(manager, definition.consumer, ids);
    } catch (error) {
      for (let index = first; index < batch.length; index++) outcomes[index] = Promise.resolve({ status: 'rejected', reason: error });
      return;
    }
    // As for the batch's own handlers: their statements leave in one write.
    holdWritesForOneTurn(manager);
    for (const [offset, isFresh] of fresh.entries()) {
      isNew[first + offset] = isFresh;
      start(first + offset);
    }
  }

  /** Adds a joined delivery to the batch, or gives it back to run alone if it cannot be batched. */
  private enlist(batch: Member[], message: ConsumeMessage, definition: ConsumerDefinition, intake: RunIntake): void {
    const event = this.admit(message, definition);
    if (event) batch.push({ message, event });
    else intake.giveBack(message);
  }

  /** Sends a failed event the retry way; if that cannot be done, gives it back to the queue. */
  private async settleFailure(channel: ConfirmChannel, message: ConsumeMessage, definition: ConsumerDefinition, event: IncomingEvent, error: unknown): Promise<void> {
    try {
      await this.onFailure(channel, message, definition, event, error);
    } catch (settleError) {
      this.requeueUnsettled(channel, message, definition, settleError);
    }
  }

  /** `handle` as `process` runs it: a failure to settle requeues instead of throwing. */
  private async handleSettled(channel: ConfirmChannel, message: ConsumeMessage, definition: ConsumerDefinition, event: IncomingEvent): Promise<void> {
    try {
      await this.handle(channel, message, definition, event);
    } catch (error) {
      this.requeueUnsettled(channel, message, definition, error);
    }
  }

  /**
   * Only settling itself fails this way (the broker went away mid-publish): give the message
   * back so it is not held until the channel closes.
   */
  private requeueUnsettled(channel: ConfirmChannel, message: ConsumeMessage, definition: ConsumerDefinition, error: unknown): void {
    this.logger.error(`Could not settle a message of ${definition.queue}: ${(error as Error).message}; requeued`);
    this.settler.requeue(channel, message);
    // A missing retry queue or DLQ: reopening the channel declares the topology again.
    if (error instanceof CopyReturnedError) channel.close().catch(() => undefined);
  }

  /**
   * Bindings are only ever added, so a handler that stopped subscribing to a type still has
   * the old binding: such an event is no failure. Remove the binding, ack, and say so.
   */
  private async dropStaleBinding(channel: ConfirmChannel, message: ConsumeMessage, definition: ConsumerDefinition, event: IncomingEvent): Promise<boolean> {
    const { exchange, routingKey } = message.fields;
    if (exchange !== this.options.exchange || definition.eventTypes.includes(routingKey)) return false;
    if (definition.partitions) await channel.unbindExchange(partitionExchangeName(definition.queue), exchange, routingKey);
    else await channel.unbindQueue(definition.queue, exchange, routingKey);
    this.settler.ack(channel, message);
    this.metrics.increment('unsubscribed', definition.consumer);
    this.logger.warn(
      `${describe(event)} -> ${definition.label}: its queue was still bound to "${routingKey}", which the handler no longer ` +
        `subscribes to; removed that binding, acked and skipped`,
    );
    return true;
  }

  private async handle(channel: ConfirmChannel, message: ConsumeMessage, definition: ConsumerDefinition, event: IncomingEvent): Promise<void> {
    let outcome;
    try {
      // Events the handler publishes are written to the outbox in its transaction: a failed run publishes nothing.
      outcome = await this.inbox.runOnce(definition.consumer, event.eventId, (manager) => this.run(manager, definition, event, message));
    } catch (error) {
      return this.onFailure(channel, message, definition, event, error);
    }
    this.settler.ack(channel, message);
    if (outcome.status === 'processed' && outcome.result.written > 0) this.outbox.wake();
    this.countOutcome(outcome.status === 'processed' ? outcome.result : 'duplicate', event, definition);
  }

  /**
   * A partitioned handler keeps strict order within its partition: a failed event is not sent to
   * a retry tier (a later event of its key could overtake it there) but run again here after the
   * retry delay, holding the partition meanwhile; after its last attempt it is dead-lettered and
   * the partition moves on. If the wait is aborted (the partition is handed to another instance,
   * or shutdown), the message goes back to the queue and its next run counts from attempt 1.
   */
  private async handleInPlace(channel: ConfirmChannel, message: ConsumeMessage, definition: ConsumerDefinition, first: IncomingEvent, signal?: AbortSignal): Promise<void> {
    const { attempts, delaysMs } = definition.retry;
    for (let event = first; ; event = { ...event, attempt: event.attempt + 1 }) {
      let outcome;
      try {
        outcome = await this.inbox.runOnce(definition.consumer, event.eventId, (manager) => this.run(manager, definition, event, message));
      } catch (error) {
        const failure = failureOf(error);
        if (error instanceof NonRetryableError || failure.name === 'NonRetryableError') {
          return this.deadLetter(channel, message, definition, 'non-retryable', event.attempt, failure, describe(event));
        }
        if (event.attempt >= attempts) return this.deadLetter(channel, message, definition, 'exhausted', event.attempt, failure, describe(event));
        const delay = delaysMs[event.attempt - 1];
        this.metrics.increment('retried', definition.consumer);
        this.logger.warn(
          `${describe(event)} -> ${definition.label}: failed on attempt ${event.attempt} of ${attempts} (${failure.name}: ${failure.message}); ` +
            `retry ${event.attempt} of ${attempts - 1} in ${delay} ms, in place: its partition waits so no later event overtakes it`,
        );
        if (!(await waitUnlessAborted(delay, signal))) {
          this.settler.requeue(channel, message);
          return;
        }
        continue;
      }
      this.settler.ack(channel, message);
      if (outcome.status === 'processed' && outcome.result.written > 0) this.outbox.wake();
      this.countOutcome(outcome.status === 'processed' ? outcome.result : 'duplicate', event, definition);
      return;
    }
  }

  /**
   * In the event's transaction: the stale-event guard (with `ordering: 'key'`), then the
   * handler, whose publishes join the transaction through the outbox.
   */
  private async run(manager: EntityManager, definition: ConsumerDefinition, event: IncomingEvent, message: ConsumeMessage): Promise<Run> {
    let order: { gap: boolean; previousSequence?: number } = { gap: false };
    if (definition.ordering === 'key') {
      const advanced = await this.inbox.advanceSequence(manager, definition.consumer, event.key!, event.sequence!);
      if (advanced.stale) return { stale: true, previous: advanced.previous ?? undefined, written: 0 };
      const previous = advanced.previous ?? undefined;
      order = { gap: previous !== undefined && event.sequence! > previous + 1, previousSequence: previous };
    }
    const run = new HandlerRun(definition.label, definition.handlerTimeoutMs, (outcome) =>
      this.logger.warn(`${describe(event)} -> ${definition.label}: the timed-out run ${outcome}`),
    );
    const context = new EventContext(event, definition.consumer, run.guard(manager), message, order, run);
    try {
      const { written } = await this.outbox.runHandler(manager, () => run.run(() => definition.handler(event.data, context)), () => run.closed());
      return { stale: false, written };
    } finally {
      run.end();
    }
  }

  private countOutcome(run: Run | 'duplicate', event: IncomingEvent, definition: ConsumerDefinition): void {
    if (run === 'duplicate') {
      this.metrics.increment('duplicates', definition.consumer);
      this.logger.log(`${describe(event)} -> ${definition.label}: duplicate, already processed; acked and skipped`);
    } else if (run.stale) {
      this.metrics.increment('stale', definition.consumer);
      this.logger.log(
        `${describe(event)} -> ${definition.label}: stale, sequence ${event.sequence} of key "${event.key}" is not newer than ${run.previous}, the last applied; acked and skipped`,
      );
    } else {
      this.metrics.increment('handled', definition.consumer);
      this.logger.debug(`${describe(event)} -> ${definition.label}: handled on attempt ${event.attempt}; acked`);
    }
  }

  private async onFailure(channel: ConfirmChannel, message: ConsumeMessage, definition: ConsumerDefinition, event: IncomingEvent, error: unknown): Promise<void> {
    const failure = failureOf(error);
    const { attempts, delaysMs } = definition.retry;
    if (error instanceof NonRetryableError || failure.name === 'NonRetryableError') {
      return this.deadLetter(channel, message, definition, 'non-retryable', event.attempt, failure, describe(event));
    }
    if (event.attempt >= attempts) {
      return this.deadLetter(channel, message, definition, 'exhausted', event.attempt, failure, describe(event));
    }
    const delay = delaysMs[event.attempt - 1];
    await this.settler.retry(channel, message, definition.queue, event.attempt + 1, delay, failure);
    this.metrics.increment('retried', definition.consumer);
    this.logger.warn(
      `${describe(event)} -> ${definition.label}: failed on attempt ${event.attempt} of ${attempts} (${failure.name}: ${failure.message}); ` +
        `retry ${event.attempt} of ${attempts - 1} in ${delay} ms`,
    );
  }

  private async deadLetter(
    channel: ConfirmChannel,
    message: ConsumeMessage,
    definition: ConsumerDefinition,
    reason: Parameters<Settler['deadLetter']>[4],
    attempts: number,
    failure: Failure,
    what: string,
  ): Promise<void> {
    await this.settler.deadLetter(channel, message, definition.queue, definition.consumer, reason, attempts, failure);
    this.metrics.increment('deadLettered', definition.consumer);
    this.logger.error(`${what} -> ${definition.label}: dead-lettered to ${definition.queue}.dlq (${reason} after ${attempts} attempt(s): ${failure.name}: ${failure.message})`);
  }

  private warnOnForeignId(event: IncomingEvent, definition: ConsumerDefinition): void {
    if (event.idSource === 'envelope') return;
    const key = `${definition.consumer}:${event.eventType}:${event.idSource}`;
    if (this.warnedIdSources.has(key)) return;
    this.warnedIdSources.add(key);
    this.logger.warn(
      event.idSource === 'messageId'
        ? `${event.eventType} events reaching ${definition.label} carry no eventId; their id comes from the AMQP messageId. Publishers should set eventId.`
        : `${event.eventType} events reaching ${definition.label} carry no eventId nor AMQP messageId; their id is a hash of the body, so identical bodies count as one event. Publishers should set eventId.`,
    );
  }
}

function describe(event: IncomingEvent): string {
  return `${event.eventType} ${event.eventId}`;
}

function describeRaw(message: ConsumeMessage): string {
  return `Message ${message.properties.messageId ?? `#${message.fields.deliveryTag}`} (routing key ${message.fields.routingKey})`;
}

/** Handlers of one isolated batch at most, each in a savepoint of its own. */
const MAX_SAVEPOINTS = 50;

/** Handlers of a batch threw: which ones (by index in the batch), and why. */
class BatchMemberFailed extends Error {
  constructor(readonly failures: Map<number, unknown>) {
    super('a handler of the batch failed');
  }
}

/**
 * On PostgreSQL a statement that failed (and was swallowed by a handler) aborts the whole
 * transaction: the next handler's query then fails (25P02) though that handler did nothing wrong.
 */
function isAbortedTransaction(error: unknown): boolean {
  if (error instanceof AbortedTransactionError) return true;
  return driverErrorOf(error)?.code === '25P02';
}

/** A delivery of a batch and its event. */
interface Member {
  message: ConsumeMessage;
  event: IncomingEvent;
}

/** A handler run's outcome, as `Promise.allSettled` gives it. */
function settle<T>(work: Promise<T> | T): Promise<PromiseSettledResult<T>> {
  return Promise.resolve(work).then(
    (value) => ({ status: 'fulfilled', value }),
    (reason: unknown) => ({ status: 'rejected', reason }),
  );
}

/** What one handler run did: skipped as stale, or ran and wrote `written` outbox rows. */
type Run = { stale: true; previous?: number; written: 0 } | { stale: false; written: number };

/** An event the stale-event guard can place: it has a key and a positive integer sequence. */
function isOrdered(event: IncomingEvent): boolean {
  return isStorableId(event.key) && event.sequence !== undefined && Number.isSafeInteger(event.sequence) && event.sequence > 0;
}

/** Waits `ms`; false if `signal` aborted first. */
function waitUnlessAborted(ms: number, signal?: AbortSignal): Promise<boolean> {
  if (signal?.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve(true);
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
