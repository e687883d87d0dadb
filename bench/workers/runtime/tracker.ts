import { now } from './clock.js';
import type { Expectation, ExpectationResult, LatencySummary, Progress } from './protocol.js';

/** What the handler learned about a message, kept on the message object until its ack. */
interface Mark {
  seq: number;
  sentAt: number;
  firstRun: boolean;
  ok: boolean;
}

interface Active extends Expectation {
  done: Uint8Array;
  doneCount: number;
  started: number;
  failed: Set<number>;
  firstStartAt: number;
  lastAckAt: number;
  lastHealthyAckAt: number;
  /** Latencies of every `sampleEvery`-th event (all of them up to MAX_LATENCY_SAMPLES), in fixed memory. */
  sampleEvery: number;
  startLatencies: Samples;
  /** Publish -> the client's consume callback (the delivery reaching the consumer's code). */
  deliveryLatencies: Samples;
  ackLatencies: Samples;
  waiters: Array<(result: ExpectationResult) => void>;
}

/** The parts of an amqplib channel prototype the tracker wraps. */
export interface ChannelPrototype {
  ack(message: any, allUpTo?: boolean): unknown;
  nack(message: any, allUpTo?: boolean, requeue?: boolean): unknown;
  consume(queue: string, ...rest: any[]): unknown;
}

export interface TrackedMessage {
  content: Buffer;
}

const MARK = Symbol('bench-mark');
/** When the consume callback got the message (set on the message object, as MARK is). */
const DELIVERED_AT = Symbol('bench-delivered-at');
/** Bounds the tracker's own memory, which a soak would otherwise count as the consumer's growth. */
const MAX_LATENCY_SAMPLES = 20_000;

class Samples {
  private readonly values: Float64Array;
  private size = 0;

  constructor(capacity: number) {
    this.values = new Float64Array(capacity);
  }

  push(value: number): void {
    if (this.size < this.values.length) this.values[this.size++] = value;
  }

  summary(): LatencySummary {
    const sorted = this.values.slice(0, this.size).sort();
    const n = sorted.length;
    const rank = (q: number) => (n === 0 ? NaN : sorted[Math.min(n - 1, Math.max(0, Math.ceil(q * n) - 1))]);
    const mean = n === 0 ? NaN : sorted.reduce((sum, value) => sum + value, 0) / n;
    return { n, p50: rank(0.5), p99: rank(0.99), max: n === 0 ? NaN : sorted[n - 1], mean };
  }
}

/**
 * Counts the events a consumer handled and acked, whatever the client. The handler calls
 * `start` (and `succeed` once its work is done) with the message object the client gave it;
 * the ack is seen by wrapping amqplib's `Channel.prototype.ack`, which every scenario's client
 * ends in. An event counts once its successful run is acked: for this library, after the
 * transaction committed; a run that failed (and was sent to a retry tier) does not count.
 */
export class Tracker {
  private active?: Active;
  private consumeStartedAt?: number;
  private bodyBytes?: number;

  constructor(private readonly queue: string) {}

  /**
   * Wraps amqplib's Channel prototype (the copy the client in this process loads). The
   * deliveries that are not settled yet are kept per channel, in delivery order, so a multiple
   * ack (`allUpTo`) counts every message it covers.
   */
  instrument(prototype: ChannelPrototype): void {
    const tracker = this;
    const { ack, nack, consume } = prototype;
    const unsettled = new WeakMap<object, Map<number, any>>();
    const settle = (channel: object, message: any, allUpTo: boolean | undefined, count: boolean) => {
      const open = unsettled.get(channel);
      const tag: number | undefined = message?.fields?.deliveryTag;
      if (!open || tag === undefined) return;
      if (!allUpTo) {
        const settled = open.get(tag);
        open.delete(tag);
        if (count && settled?.[MARK]) tracker.acked(settled[MARK] as Mark);
        return;
      }
      for (const [openTag, openMessage] of open) {
        if (openTag > tag) break;
        open.delete(openTag);
        if (count && openMessage[MARK]) tracker.acked(openMessage[MARK] as Mark);
      }
    };
    prototype.ack = function (this: object, message: any, allUpTo?: boolean) {
      const result = ack.call(this, message, allUpTo);
      settle(this, message, allUpTo, true);
      return result;
    };
    prototype.nack = function (this: object, message: any, allUpTo?: boolean, requeue?: boolean) {
      const result = nack.call(this, message, allUpTo, requeue);
      settle(this, message, allUpTo, false);
      return result;
    };
    prototype.consume = function (this: object, queue: string, callback: (message: any) => unknown, ...rest: any[]) {
      // Every consume of the worker is a benchmark queue (scenario h consumes its partition queues).
      if (queue === tracker.queue) tracker.consumeStartedAt ??= now();
      const open = unsettled.get(this) ?? new Map<number, any>();
      unsettled.set(this, open);
      return consume.call(this, queue, (message: any) => {
        if (message) {
          // Only the latency phase reads it: the throughput phases do not pay for the clock.
          if (tracker.active?.latency) message[DELIVERED_AT] = now();
          open.set(message.fields.deliveryTag, message);
        }
        return callback(message);
      }, ...rest);
    };
  }

  expect(expectation: Expectation): void {
    const sampleEvery = Math.max(1, Math.ceil(expectation.count / MAX_LATENCY_SAMPLES));
    const capacity = expectation.latency ? Math.ceil(expectation.count / sampleEvery) : 0;
    this.active = {
      ...expectation,
      done: new Uint8Array(expectation.count),
      doneCount: 0,
      started: 0,
      failed: new Set(),
      firstStartAt: 0,
      lastAckAt: 0,
      lastHealthyAckAt: 0,
      sampleEvery,
      startLatencies: new Samples(capacity),
      deliveryLatencies: new Samples(capacity),
      ackLatencies: new Samples(capacity),
      waiters: [],
    };
  }

  /** Resolves once every expected event has been handled and acked. */
  wait(): Promise<ExpectationResult> {
    const active = this.active;
    if (!active) return Promise.reject(new Error('no expectation registered'));
    if (active.doneCount === active.count) return Promise.resolve(this.result(active));
    return new Promise((resolve) => active.waiters.push(resolve));
  }

  progress(): Progress {
    const active = this.active;
    return { done: active?.doneCount ?? 0, count: active?.count ?? 0, started: active?.started ?? 0 };
  }

  /** At the start of the handler. Returns true when this run must fail (the planned failures). */
  start(message: TrackedMessage, event: { seq: number; sentAt: number }): boolean {
    const at = now();
    this.bodyBytes ??= message.content.length;
    const active = this.active;
    const index = active ? event.seq - active.fromSeq : -1;
    const inRange = active !== undefined && index >= 0 && index < active.count;
    const firstRun = !inRange || !active.failed.has(event.seq);
    (message as any)[MARK] = { seq: event.seq, sentAt: event.sentAt, firstRun, ok: false } satisfies Mark;
    if (!inRange) return false;
    if (firstRun) {
      active.started += 1;
      if (active.firstStartAt === 0) active.firstStartAt = at;
      if (active.latency && index % active.sampleEvery === 0) {
        active.startLatencies.push(at - event.sentAt);
        const deliveredAt = (message as any)[DELIVERED_AT] as number | undefined;
        if (deliveredAt !== undefined) active.deliveryLatencies.push(deliveredAt - event.sentAt);
      }
    }
    if (firstRun && active.failEvery > 0 && event.seq % active.failEvery === 0) {
      active.failed.add(event.seq);
      return true;
    }
    return false;
  }

  /** At the end of a successful handler run: its ack will count. */
  succeed(message: TrackedMessage): void {
    const mark = (message as any)[MARK] as Mark | undefined;
    if (mark) mark.ok = true;
  }

  private acked(mark: Mark): void {
    const active = this.active;
    if (!mark.ok || !active) return;
    const index = mark.seq - active.fromSeq;
    if (index < 0 || index >= active.count || active.done[index]) return;
    const at = now();
    active.done[index] = 1;
    active.doneCount += 1;
    active.lastAckAt = at;
    if (mark.firstRun) {
      active.lastHealthyAckAt = at;
      if (active.latency && index % active.sampleEvery === 0) active.ackLatencies.push(at - mark.sentAt);
    }
    if (active.doneCount === active.count) {
      const result = this.result(active);
      for (const resolve of active.waiters.splice(0)) resolve(result);
    }
  }

  private result(active: Active): ExpectationResult {
    return {
      count: active.count,
      healthy: active.count - active.failed.size,
      retried: active.failed.size,
      firstStartAt: active.firstStartAt,
      lastAckAt: active.lastAckAt,
      lastHealthyAckAt: active.lastHealthyAckAt,
      consumeStartedAt: this.consumeStartedAt,
      handlerStart: active.latency ? active.startLatencies.summary() : undefined,
      delivery: active.latency ? active.deliveryLatencies.summary() : undefined,
      ack: active.latency ? active.ackLatencies.summary() : undefined,
      bodyBytes: this.bodyBytes,
    };
  }
}

/** Thrown by a handler for the planned failures of the failure-cost phase. */
export class PlannedFailure extends Error {
  constructor(seq: number) {
    super(`planned failure of event ${seq} (failure-cost phase)`);
    this.name = 'PlannedFailure';
  }
}
