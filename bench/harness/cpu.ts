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
  /** Per process: PostgreSQL starts and ends a process per connection. */
  postgres?: Map<string, number>;
}

/** Microseconds of CPU per event handled; `all` sums the processes that were read. */
export interface CpuPerEvent {
  consumer?: number;
  publisher?: number;
  broker?: number;
  postgres?: number;
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

/** CPU ms of every process whose command name is one of `names`, by name and pid: one pass over /proc. */
function commandCpuMs(names: string[]): Map<string, Map<string, number>> | undefined {
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return undefined;
  }
  const byName = new Map<string, Map<string, number>>();
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    let command: string;
    try {
      command = readFileSync(`/proc/${entry}/comm`, 'utf8').trim();
    } catch {
      continue; // it exited meanwhile
    }
    if (!names.includes(command)) continue;
    const ms = processCpuMs(entry);
    if (ms === undefined) continue;
    if (!byName.has(command)) byName.set(command, new Map());
    byName.get(command)!.set(entry, ms);
  }
  return byName;
}

const total = (byPid: Map<string, number> | undefined) => byPid && [...byPid.values()].reduce((sum, ms) => sum + ms, 0);

/** CPU ms used so far by the local RabbitMQ, or undefined where it cannot be read. */
export function brokerCpuMs(): number | undefined {
  return total(commandCpuMs(['beam.smp'])?.get('beam.smp'));
}

export function readCpu(pids: { consumer?: number; publisher?: number }): CpuReading {
  const services = commandCpuMs(['beam.smp', 'postgres']);
  return {
    consumer: pids.consumer === undefined ? undefined : processCpuMs(pids.consumer),
    publisher: pids.publisher === undefined ? undefined : processCpuMs(pids.publisher),
    broker: total(services?.get('beam.smp')),
    postgres: services?.get('postgres'),
  };
}

/**
 * Per event, between two readings. PostgreSQL's processes count from the first reading, or
 * from zero if they started in between; one that ended in between takes its time in the phase
 * with it (the pooled connections of the phase's processes stay open through it).
 */
export function cpuPerEvent(before: CpuReading, after: CpuReading, events: number): CpuPerEvent {
  const used = {
    consumer: difference(before.consumer, after.consumer),
    publisher: difference(before.publisher, after.publisher),
    broker: difference(before.broker, after.broker),
    postgres: after.postgres && [...after.postgres].reduce((sum, [pid, ms]) => sum + ms - (before.postgres?.get(pid) ?? 0), 0),
  };
  const result: CpuPerEvent = {};
  for (const [key, ms] of Object.entries(used) as Array<[keyof typeof used, number | undefined]>) {
    if (ms === undefined) continue;
    result[key] = (ms * 1000) / events;
    result.all = (result.all ?? 0) + result[key];
  }
  return result;
}

function difference(from: number | undefined, to: number | undefined): number | undefined {
  return from === undefined || to === undefined ? undefined : to - from;
}
