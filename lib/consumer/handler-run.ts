import type { EntityManager } from 'typeorm';
import { HandlerRunOverError, HandlerTimeoutError } from '../errors/handler-timeout.error.js';

/**
 * One run of a handler. It bounds the run by the handler's timeout, and once the run is over
 * (returned, failed or timed out) it closes what the run was given: `ctx.manager` and publishes
 * through the run's transaction refuse further use, so a run that goes on after its timeout
 * cannot write into a later transaction on the same connection (SQLite has only one).
 */
export class HandlerRun {
  private over = false;
  private controller?: AbortController;
  private timedOut?: HandlerTimeoutError;

  constructor(
    private readonly label: string,
    private readonly timeoutMs: number | false,
    /** Told how a timed-out run ended after all. */
    private readonly onLate: (outcome: string) => void,
  ) {}

  /** Aborted when the run times out. */
  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.timedOut) this.controller.abort(this.timedOut);
    }
    return this.controller.signal;
  }

  /** Why the run may no longer use its transaction, once it is over. */
  closed(): Error | undefined {
    return this.over ? new HandlerRunOverError(this.label) : undefined;
  }

  /** `manager` as the handler sees it: refused once the run is over. */
  guard(manager: EntityManager): EntityManager {
    const run = this;
    return new Proxy(manager, {
      get(target, property, receiver) {
        if (run.over && typeof property === 'string' && property !== 'then') throw new HandlerRunOverError(run.label);
        return Reflect.get(target, property, receiver);
      },
    });
  }

  /** Runs `work`, failing with HandlerTimeoutError once it takes longer than the timeout. */
  async run<T>(work: () => Promise<T>): Promise<T> {
    if (this.timeoutMs === false) return work();
    const timeoutMs = this.timeoutMs;
    const running = work();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const error = new HandlerTimeoutError(this.label, timeoutMs);
        this.timedOut = error;
        this.end();
        this.controller?.abort(error);
        const since = Date.now();
        running.then(
          () => this.onLate(`returned ${Date.now() - since} ms after its timeout; nothing it wrote was committed`),
          (late: unknown) => this.onLate(`failed ${Date.now() - since} ms after its timeout (${late instanceof Error ? late.message : String(late)})`),
        );
        reject(error);
      }, timeoutMs);
    });
    try {
      return await Promise.race([running, timedOut]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Ends the run: later use of its transaction fails with HandlerRunOverError. */
  end(): void {
    this.over = true;
  }
}
