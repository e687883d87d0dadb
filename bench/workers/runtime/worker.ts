import type { Command, Loaded, MemorySample, ProcessStats, Ready, Reply, Request, WorkerConfig } from './protocol.js';

type Handler = (args: any) => unknown;

/** The worker's configuration, as the harness passed it. */
export function workerConfig(): WorkerConfig {
  const raw = process.env.BENCH_WORKER;
  if (!raw) throw new Error('BENCH_WORKER is not set: workers are started by the benchmark harness (npm run bench)');
  return JSON.parse(raw) as WorkerConfig;
}

/**
 * Answers the harness's requests. `stop` runs its handler (a graceful shutdown), answers,
 * and exits. The worker also exits when the harness goes away, so no process outlives a run.
 */
export function serve(handlers: Partial<Record<Command, Handler>>): void {
  process.on('message', (request: Request) => {
    const handler = handlers[request.command] ?? (request.command === 'stats' ? processStats : undefined);
    if (!handler) return reply({ id: request.id, ok: false, error: `unknown command ${request.command}` });
    Promise.resolve()
      .then(() => handler(request.args))
      .then(
        (result) => reply({ id: request.id, ok: true, result }),
        (error: unknown) => reply({ id: request.id, ok: false, error: error instanceof Error ? (error.stack ?? error.message) : String(error) }),
      )
      .then(() => {
        if (request.command === 'stop') process.exit(0);
      });
  });
}

/**
 * Runs the worker's `main` on the harness's `boot` command. Loading the modules (most of a Nest
 * worker's start-up) is done by then, so the harness can load a worker ahead of the phase that
 * needs it, and boot it when that phase starts.
 */
export function launch(main: () => Promise<void>): void {
  const onBoot = (request: Request) => {
    if (request.command !== 'boot') return;
    process.off('message', onBoot);
    main().catch(failStartup);
  };
  process.on('message', onBoot);
  process.on('disconnect', () => process.exit(2));
  const loaded: Loaded = { loaded: true };
  process.send?.(loaded);
}

/** Tells the harness the worker is up (for a consumer: consuming). */
export function ready(info?: Record<string, string>): void {
  const message: Ready = { ready: true, info };
  process.send?.(message);
}

/** A worker that cannot start says why on stderr (kept in the run's log) and exits. */
export function failStartup(error: unknown): never {
  console.error('worker failed to start:', error);
  process.exit(1);
}

export function processStats(): ProcessStats {
  const memory = process.memoryUsage();
  return {
    rssMb: memory.rss / 2 ** 20,
    maxRssMb: process.resourceUsage().maxRSS / 1024,
    heapUsedMb: memory.heapUsed / 2 ** 20,
  };
}

/** Soak mode: RSS, V8 heap used and off-heap buffers every `intervalMs`, kept for the report. */
export function sampleMemory(intervalMs: number): MemorySample[] {
  const samples: MemorySample[] = [];
  const started = Date.now();
  const take = () => {
    const memory = process.memoryUsage();
    samples.push({ at: (Date.now() - started) / 1000, rssMb: memory.rss / 2 ** 20, heapUsedMb: memory.heapUsed / 2 ** 20, externalMb: memory.external / 2 ** 20 });
  };
  take();
  setInterval(take, intervalMs).unref();
  return samples;
}

function reply(message: Reply): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send) return resolve();
    process.send(message, undefined, {}, () => resolve());
  });
}
