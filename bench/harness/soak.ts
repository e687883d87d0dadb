import type { MemorySample, ProcessStats, PublishResult, ScenarioId } from '../workers/runtime/protocol.js';
import type { WorkerProcess } from './child.js';
import { type RunContext, awaitDone, startWorker } from './phases.js';
import type { SoakResult } from './report.js';

const MEMORY_SAMPLE_MS = 5_000;
/** The heap floor is the lowest heap-used sample in a window this long: live objects, with little uncollected garbage. */
const HEAP_FLOOR_WINDOW_S = 60;

function heapFloor(samples: MemorySample[], fromS: number, toS: number): number | undefined {
  const inWindow = samples.filter((sample) => sample.at >= fromS && sample.at <= toS && sample.heapUsedMb !== undefined);
  return inWindow.length ? Math.min(...inWindow.map((sample) => sample.heapUsedMb!)) : undefined;
}

/** Soak mode: one scenario at a steady rate for minutes; the consumer's memory over time. */
export async function runSoak(ctx: RunContext, id: ScenarioId): Promise<SoakResult> {
  const { options, broker } = ctx;
  const minutes = options.soak ?? 10;
  const events = Math.round(options.rate * minutes * 60);
  const result: SoakResult = { scenario: id, ok: false, minutes, rate: options.rate, events, samples: [] };
  const workers: WorkerProcess[] = [];
  try {
    await ctx.database.reset(id);
    for (const queue of ctx.names[id]!.queues) await broker.purge(queue);
    const [consumer, publisher] = await Promise.all([
      startWorker(ctx, id, 'consumer', 'soak', 'soak', { memorySampleMs: MEMORY_SAMPLE_MS }).then((worker) => (workers.push(worker), worker)),
      startWorker(ctx, id, 'publisher', 'soak', 'soak').then((worker) => (workers.push(worker), worker)),
    ]);
    await consumer.request('expect', { fromSeq: 0, count: events, failEvery: 0, latency: true }, 10_000);
    ctx.log(`soak of (${id}): ${events.toLocaleString('en-US')} events at ${options.rate}/s for ${minutes} min`);
    await publisher.request<PublishResult>('steady', { tag: `${ctx.runId}-soak`, fromSeq: 0, rate: options.rate, durationMs: minutes * 60_000 }, minutes * 60_000 + 120_000);
    const done = await awaitDone(consumer, 120_000);
    const stats = await consumer.request<ProcessStats>('stats', undefined, 10_000);
    const samples = stats.samples ?? [];
    const durationS = minutes * 60;
    const at = (fraction: number) => (samples.find((sample) => sample.at >= fraction * durationS) ?? samples[samples.length - 1]).rssMb;
    const inSoak = samples.filter((sample) => sample.at <= durationS);
    Object.assign(result, {
      samples,
      startMb: at(0.1),
      middleMb: at(0.5),
      endMb: inSoak[inSoak.length - 1]?.rssMb ?? stats.rssMb,
      maxMb: Math.max(...samples.map((sample) => sample.rssMb)),
      heapFloorStartMb: heapFloor(samples, 0.1 * durationS, 0.1 * durationS + HEAP_FLOOR_WINDOW_S),
      heapFloorEndMb: heapFloor(samples, durationS - HEAP_FLOOR_WINDOW_S, durationS),
      handlerStartP99: done.handlerStart?.p99,
      ackP99: done.ack?.p99,
    });
    result.growthPct = ((result.endMb! - result.startMb!) / result.startMb!) * 100;
    await Promise.all(workers.map((worker) => worker.stop()));
    result.ok = true;
  } catch (error) {
    result.error = error instanceof Error ? error.message : String(error);
  } finally {
    for (const worker of workers) worker.kill();
  }
  return result;
}
