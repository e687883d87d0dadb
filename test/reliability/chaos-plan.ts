/**
 * What the chaos run publishes and what it must find afterwards, shared by the controller
 * (chaos.reliability-spec.ts) and its child processes so all of them derive the same events
 * from the same few numbers. No test globals here: the child processes import it too.
 */
import type { RetryOptions } from '../../lib/index.js';

export type ChaosEventType = 'UserCreated' | 'UserUpdated';

export const CHAOS_EVENT_TYPES: ChaosEventType[] = ['UserCreated', 'UserUpdated'];

/**
 * The billing handlers' retry policy: short enough that the run finishes, and a chain (about
 * 34 s) longer than a PostgreSQL restart, so an event failing during that outage is retried
 * until the database is back instead of being dead-lettered. Poison events skip it
 * (NonRetryableError).
 */
export const CHAOS_RETRY: RetryOptions = { attempts: 6, delays: ['200ms', '1s', '3s', '10s', '20s'] };

export interface ChaosConfig {
  /** CHAOS_EVENTS: events the publisher commits. */
  events: number;
  /** CHAOS_UPDATES_PER_USER: each user gets one UserCreated, then this many UserUpdated. */
  updatesPerUser: number;
  /** CHAOS_POISON: events marked `poison`, which the handlers dead-letter on purpose. */
  poison: number;
  /** CHAOS_CONSUMERS: billing processes competing on the same queues. */
  consumers: number;
  /** CHAOS_BROKER_RESTARTS: `rabbitmqctl stop_app` / `start_app` cycles. */
  brokerRestarts: number;
  /** CHAOS_CONSUMER_KILLS: SIGKILLs of a billing process, each followed by its restart. */
  consumerKills: number;
  /** CHAOS_PG_RESTARTS: PostgreSQL restarts. */
  pgRestarts: number;
  /** CHAOS_RATE: events per second the publisher commits at most (0: as fast as it can). */
  rate: number;
  /** CHAOS_LANES: publisher transactions in flight at once (each lane owns its users). */
  lanes: number;
  /**
   * CHAOS_HANDLER_MS: work each handler run stands for (a wait inside its transaction), so the
   * billing processes are busy and the faults catch transactions and deliveries in flight.
   */
  handlerMs: number;
  /** CHAOS_OUTAGE_EVENTS: a broker outage lasts until the publisher has committed this many more events. */
  outageEvents: number;
  /** CHAOS_TIMEOUT: seconds the whole run may take before it fails (teardown comes on top). */
  timeoutMs: number;
  /** CHAOS_LOG_DIR: where each run keeps its processes' logs (a directory per run). */
  logDir: string;
  /** CHAOS_KEEP_LOGS=1: keep the logs of a passing run too (a failed run always keeps them). */
  keepLogs: boolean;
}

function integer(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < min) throw new Error(`${name} must be an integer >= ${min} (got ${JSON.stringify(raw)})`);
  return value;
}

/** The run's settings from CHAOS_* variables; the defaults are the CI setting (about four minutes on two cores). */
export function chaosConfig(env: NodeJS.ProcessEnv = process.env, defaultLogDir = 'chaos-logs'): ChaosConfig {
  const config: ChaosConfig = {
    events: integer(env, 'CHAOS_EVENTS', 10_000, 1),
    updatesPerUser: integer(env, 'CHAOS_UPDATES_PER_USER', 2, 0),
    poison: integer(env, 'CHAOS_POISON', 20, 0),
    consumers: integer(env, 'CHAOS_CONSUMERS', 2, 1),
    brokerRestarts: integer(env, 'CHAOS_BROKER_RESTARTS', 3, 0),
    consumerKills: integer(env, 'CHAOS_CONSUMER_KILLS', 3, 0),
    pgRestarts: integer(env, 'CHAOS_PG_RESTARTS', 1, 0),
    rate: integer(env, 'CHAOS_RATE', 60, 0),
    lanes: integer(env, 'CHAOS_LANES', 4, 1),
    handlerMs: integer(env, 'CHAOS_HANDLER_MS', 40, 0),
    outageEvents: integer(env, 'CHAOS_OUTAGE_EVENTS', 300, 0),
    timeoutMs: integer(env, 'CHAOS_TIMEOUT', 600, 1) * 1000,
    logDir: env.CHAOS_LOG_DIR || defaultLogDir,
    keepLogs: env.CHAOS_KEEP_LOGS === '1',
  };
  if (config.poison > config.events) throw new Error(`CHAOS_POISON (${config.poison}) cannot exceed CHAOS_EVENTS (${config.events})`);
  return config;
}

export interface PlannedEvent {
  index: number;
  eventId: string;
  eventType: ChaosEventType;
  userId: string;
  /** 0 for UserCreated, n for the n-th UserUpdated of the user. */
  version: number;
  poison: boolean;
}

/** The data of both event types. */
export interface UserEventData {
  userId: string;
  name: string;
  version: number;
  poison?: true;
}

/**
 * Event i belongs to user floor(i / (1 + updatesPerUser)): first its UserCreated, then its
 * updates. Poison events are spread evenly over the run.
 */
export class ChaosPlan {
  readonly perUser: number;
  readonly users: number;
  private readonly poisoned: Set<number>;

  constructor(
    readonly runId: string,
    readonly events: number,
    updatesPerUser: number,
    poison: number,
  ) {
    this.perUser = 1 + updatesPerUser;
    this.users = Math.ceil(events / this.perUser);
    this.poisoned = new Set(Array.from({ length: poison }, (_, j) => Math.floor(((j + 0.5) * events) / poison)));
  }

  event(index: number): PlannedEvent {
    const user = Math.floor(index / this.perUser);
    const version = index % this.perUser;
    return {
      index,
      eventId: `${this.runId}-e${index}`,
      eventType: version === 0 ? 'UserCreated' : 'UserUpdated',
      userId: `${this.runId}-u${user}`,
      version,
      poison: this.poisoned.has(index),
    };
  }

  data(event: PlannedEvent): UserEventData {
    const data: UserEventData = { userId: event.userId, name: `user ${event.userId} v${event.version}`, version: event.version };
    if (event.poison) data.poison = true;
    return data;
  }

  /** The indexes of user u's events, in the order they are committed. */
  eventsOfUser(user: number): number[] {
    const first = user * this.perUser;
    return Array.from({ length: Math.min(this.perUser, this.events - first) }, (_, v) => first + v);
  }

  all(): PlannedEvent[] {
    return Array.from({ length: this.events }, (_, i) => this.event(i));
  }
}

/** Names of one run: the service's queues and consumers, and its own tables. */
export interface ChaosNames {
  runId: string;
  /** The billing service: its handler queues are `<service>.<consumer>`. */
  service: string;
  /** The publishing service: the outbox rows' `source`. */
  publisher: string;
  exchange: string;
  consumers: Record<ChaosEventType, string>;
  tables: { users: string; effects: string; customers: string };
}

export function chaosNames(runId: string): ChaosNames {
  const table = runId.replace(/[^a-z0-9]/g, '_');
  return {
    runId,
    service: `${runId}-billing`,
    publisher: `${runId}-users`,
    exchange: `${runId}-events`,
    consumers: { UserCreated: `${runId}.onUserCreated`, UserUpdated: `${runId}.onUserUpdated` },
    tables: { users: `${table}_users`, effects: `${table}_effects`, customers: `${table}_customers` },
  };
}
