import { type ChildProcess, fork } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import type { Command, Loaded, Ready, Reply, WorkerConfig } from '../workers/runtime/protocol.js';

interface Pending {
  resolve: (value: any) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

export interface SpawnOptions {
  logFile: string;
  execArgv?: string[];
  readyTimeoutMs: number;
}

/** Every worker alive, so an interrupted run can end them (by pid) before it exits. */
const alive = new Set<WorkerProcess>();

export function killAllWorkers(): void {
  for (const worker of alive) worker.kill();
}

/**
 * One worker process (a publisher or a consumer), its output in its own log file, driven by
 * requests over the IPC channel. Every wait is bounded.
 */
export class WorkerProcess {
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private exitError?: Error;
  readonly exited: Promise<number | null>;
  info?: Record<string, string>;

  private constructor(
    readonly name: string,
    private readonly child: ChildProcess,
    readonly logFile: string,
    private readonly readyTimeoutMs: number,
  ) {
    alive.add(this);
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        alive.delete(this);
        this.exitError = new Error(`${name} exited (code ${code}, signal ${signal})${logTail(logFile)}`);
        for (const [, pending] of this.pending) {
          clearTimeout(pending.timer);
          pending.reject(this.exitError);
        }
        this.pending.clear();
        resolve(code);
      });
    });
    child.on('message', (message: Reply | Ready | Loaded) => {
      if ('ready' in message || 'loaded' in message) return;
      const pending = this.pending.get(message.id);
      if (!pending) return;
      this.pending.delete(message.id);
      clearTimeout(pending.timer);
      if (message.ok) pending.resolve(message.result);
      else pending.reject(new Error(`${name}: ${message.error}`));
    });
  }

  /** The worker's process id (for reading its CPU time). */
  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Starts a worker and boots it: resolves (bounded) once it says it is ready. */
  static async start(name: string, script: string, config: WorkerConfig, options: SpawnOptions): Promise<WorkerProcess> {
    return (await WorkerProcess.spawn(name, script, config, options)).boot();
  }

  /**
   * Starts a worker process that loads its modules and then waits: `boot()` connects it
   * (and, for a consumer, starts consuming). Loading ahead saves most of a Nest worker's start-up.
   */
  static spawn(name: string, script: string, config: WorkerConfig, options: SpawnOptions): Promise<WorkerProcess> {
    const log = openSync(options.logFile, 'a');
    const child = fork(script, [], {
      execArgv: options.execArgv ?? [],
      env: { ...process.env, BENCH_WORKER: JSON.stringify(config) },
      stdio: ['ignore', log, log, 'ipc'],
    });
    closeSync(log);
    const worker = new WorkerProcess(name, child, options.logFile, options.readyTimeoutMs);
    return worker.until('loaded', 'loaded its modules').then(() => worker);
  }

  /** Boots a spawned worker; resolves (bounded) once it is ready. */
  async boot(): Promise<WorkerProcess> {
    const ready = this.until('ready', 'ready');
    this.child.send({ id: 0, command: 'boot' });
    this.info = (await ready).info;
    return this;
  }

  private until<K extends 'loaded' | 'ready'>(key: K, what: string): Promise<K extends 'ready' ? Ready : Loaded> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.kill();
        reject(new Error(`${this.name} was not ${what} within ${this.readyTimeoutMs} ms${logTail(this.logFile)}`));
      }, this.readyTimeoutMs);
      const onMessage = (message: Reply | Ready | Loaded) => {
        if (!(key in message)) return;
        clearTimeout(timer);
        this.child.off('message', onMessage);
        resolve(message as never);
      };
      this.child.on('message', onMessage);
      void this.exited.then(() => {
        clearTimeout(timer);
        reject(this.exitError);
      });
    });
  }

  request<T>(command: Command, args: unknown, timeoutMs: number): Promise<T> {
    if (this.exitError) return Promise.reject(this.exitError);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${this.name}: no answer to "${command}" within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.child.send({ id, command, args });
    });
  }

  /** Graceful stop (the worker closes its app), then a kill if it does not exit in time. */
  async stop(timeoutMs = 20_000): Promise<void> {
    if (this.exitError) return;
    await this.request('stop', undefined, timeoutMs).catch(() => this.kill());
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.exited, new Promise((resolve) => (timer = setTimeout(resolve, 5_000)))]);
    clearTimeout(timer);
    this.kill();
    await this.exited;
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

function logTail(file: string, lines = 15): string {
  try {
    const text = readFileSync(file, 'utf8').trimEnd();
    if (!text) return '';
    return `\n  last lines of ${file}:\n    ${text.split('\n').slice(-lines).join('\n    ')}`;
  } catch {
    return '';
  }
}
