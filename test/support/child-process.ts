import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { waitFor } from './wait.js';

const ROOT = new URL('../../', import.meta.url).pathname;

export interface TsProcess {
  readonly name: string;
  readonly child: ChildProcessWithoutNullStreams;
  /** Resolves when the process has exited: its code, or the signal that ended it. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly running: boolean;
  /** Calls `listener` with every complete line the process writes (stdout and stderr). */
  onLine(listener: (line: string) => void): void;
  /** Waits for a line matching `pattern`; fails early if the process exits first. */
  waitForLine(pattern: RegExp, timeoutMs: number): Promise<string>;
  /** SIGTERM, then SIGKILL if it has not exited within `timeoutMs`; resolves with the exit. */
  stop(timeoutMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * Runs a TypeScript file of this repository in a process of its own (through ts-register.mjs),
 * appending everything it writes to `logFile`, one line per line, prefixed with the time.
 */
export function spawnTs(script: string, options: { name: string; env: Record<string, string>; logFile: string }): TsProcess {
  const child = spawn(process.execPath, ['--import', './test/support/ts-register.mjs', script], {
    cwd: ROOT,
    env: { ...process.env, NO_COLOR: '1', ...options.env },
  });
  const log: WriteStream = createWriteStream(options.logFile, { flags: 'a' });
  log.write(`${new Date().toISOString()} [spawn] ${options.name}: pid ${child.pid}\n`);
  const listeners: Array<(line: string) => void> = [];
  let running = true;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      running = false;
      log.end(`${new Date().toISOString()} [exit] ${options.name}: code ${code} signal ${signal}\n`);
      resolve({ code, signal });
    }),
  );
  for (const stream of [child.stdout, child.stderr]) {
    let partial = '';
    stream.on('data', (chunk: Buffer) => {
      const lines = (partial + chunk.toString()).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        if (log.writable) log.write(`${new Date().toISOString()} ${line}\n`);
        for (const listener of listeners) listener(line);
      }
    });
  }
  const handle: TsProcess = {
    name: options.name,
    child,
    exited,
    get running() {
      return running;
    },
    onLine(listener) {
      listeners.push(listener);
    },
    async waitForLine(pattern, timeoutMs) {
      let found: string | undefined;
      listeners.push((line) => (found ??= pattern.test(line) ? line : undefined));
      await waitFor(() => found !== undefined || !running, { timeoutMs, intervalMs: 50, what: `${options.name} to print ${pattern} (log: ${options.logFile})` });
      if (found === undefined) throw new Error(`${options.name} exited before printing ${pattern} (log: ${options.logFile})`);
      return found;
    },
    async stop(timeoutMs = 30_000) {
      if (running) child.kill('SIGTERM');
      const timer = setTimeout(() => running && child.kill('SIGKILL'), timeoutMs);
      try {
        return await exited;
      } finally {
        clearTimeout(timer);
      }
    },
  };
  return handle;
}
