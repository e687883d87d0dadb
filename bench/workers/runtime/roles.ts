import { dirname, join } from 'node:path';
import { type PublishOne, burst, steady } from './publishing.js';
import type { BurstCommand, Expectation, ProcessStats, SteadyCommand, WorkerConfig } from './protocol.js';
import { Tracker } from './tracker.js';
import { processStats, ready, sampleMemory, serve } from './worker.js';

type RequireLike = { (id: string): any; resolve(id: string): string };

/**
 * amqplib's Channel prototype, as loaded by `require` (the caller's own resolution: the
 * golevelup worker has its own amqplib copy). Deep paths are reached through the package
 * directory because amqplib's `exports` map hides them.
 */
export function amqplibChannelPrototype(require: RequireLike): any {
  const packageDir = dirname(require.resolve('amqplib'));
  return require(join(packageDir, 'lib', 'channel_model.js')).Channel.prototype;
}

/** A consumer's tracker, with the acks of the amqplib copy `require` loads instrumented. */
export function consumerTracker(config: WorkerConfig, require: RequireLike): Tracker {
  const tracker = new Tracker(config.queue);
  tracker.instrument(amqplibChannelPrototype(require));
  if (config.expect) tracker.expect(config.expect);
  return tracker;
}

/** Serves a consumer's commands; call once it consumes. */
export function serveConsumer(config: WorkerConfig, tracker: Tracker, stop: () => Promise<unknown>, info?: Record<string, string>): void {
  const samples = config.memorySampleMs ? sampleMemory(config.memorySampleMs) : undefined;
  serve({
    expect: (expectation: Expectation) => tracker.expect(expectation),
    await: () => tracker.wait(),
    progress: () => tracker.progress(),
    stats: (): ProcessStats => ({ ...processStats(), samples }),
    stop,
  });
  ready(info);
}

/** Serves a publisher's commands; call once it can publish. */
export function servePublisher(publishOne: PublishOne, stop: () => Promise<unknown>, info?: Record<string, string>): void {
  serve({
    burst: (command: BurstCommand) => burst(publishOne, command),
    steady: (command: SteadyCommand) => steady(publishOne, command),
    stop,
  });
  ready(info);
}
