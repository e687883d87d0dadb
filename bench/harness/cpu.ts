import { execSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';

/**
 * CPU time (user + system, from /proc) of the processes a phase runs on: the consumer and the
 * publisher (by pid), the local RabbitMQ (its Erlang VM) and PostgreSQL (all its processes).
 * On two cores they share the machine, so a phase's rate is bounded by their sum per event.
 * Where /proc or a process is not there (not Linux, a remote service), its figure is undefined.
 */
export interface CpuReading {
  consumer?: number;
  publisher?: number;
  broker?: number;
  postgres?: number;
}

/** Microseconds of CPU per event handled; `all` sums the processes that were read. */
export interface CpuPerEvent extends CpuReading {
  all?: number;
}

let ticksPerSecond: number | undefined;

function ticks(): number {
  if (ticksPerSecond === undefined) {
    try {
      ticksPerSecond = Number(execSync('getconf CLK_TCK', { encoding: 'utf8' }).trim()) || 100;
    } catch {
      ticksPerSecond = 100;
    }
  }
  return ticksPerSecond;
}

/** utime + stime of one process in ms, or undefined if it is not there. */
function processCpuMs(pid: number | string): number | undefined {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / ticks();
  } catch {
    return undefined;
  }
}

/** Summed CPU ms of every process whose command name is `name` (PostgreSQL forks one per connection). */
function commandCpuMs(name: string): number | undefined {
  let total: number | undefined;
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return undefined;
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    let command: string;
    try {
      command = readFileSync(`/proc/${entry}/comm`, 'utf8').trim();
    } catch {
      continue; // it exited meanwhile
    }
    if (command !== name) continue;
    const ms = processCpuMs(entry);
    if (ms !== undefined) total = (total ?? 0) + ms;
  }
  return total;
}

/** CPU ms used so far by the local RabbitMQ, or undefined where it cannot be read. */
export function brokerCpuMs(): number | undefined {
  return commandCpuMs('beam.smp');
}

export function readCpu(pids: { consumer?: number; publisher?: number }): CpuReading {
  return {
    consumer: pids.consumer === undefined ? undefined : processCpuMs(pids.consumer),
    publisher: pids.publisher === undefined ? undefined : processCpuMs(pids.publisher),
    broker: brokerCpuMs(),
    postgres: commandCpuMs('postgres'),
  };
}

/**
 * Per event, between two readings. A PostgreSQL backend that exits in between takes its time
 * with it; the pooled connections of a phase stay open through it.
 */
export function cpuPerEvent(before: CpuReading, after: CpuReading, events: number): CpuPerEvent {
  const result: CpuPerEvent = {};
  let all: number | undefined;
  for (const key of ['consumer', 'publisher', 'broker', 'postgres'] as const) {
    const [from, to] = [before[key], after[key]];
    if (from === undefined || to === undefined) continue;
    result[key] = ((to - from) * 1000) / events;
    all = (all ?? 0) + result[key]!;
  }
  result.all = all;
  return result;
}
