import { DataSource } from 'typeorm';
import { InvalidSyncOptionsError } from '../errors/invalid-sync-options.error.js';
import type { OutboxOptions, ResolvedOutboxOptions, ResolvedSyncOptions, SyncModuleOptions } from '../interfaces/sync-module-options.interface.js';
import {
  DEFAULT_BATCH_SIZE,
  DEFAULT_EXCHANGE,
  DEFAULT_HANDLER_TIMEOUT_MS,
  DEFAULT_MAX_MESSAGE_BYTES,
  DEFAULT_MAX_PENDING_PUBLISHES,
  DEFAULT_OUTBOX,
  DEFAULT_PREFETCH,
  DEFAULT_PUBLISH_TIMEOUT_MS,
  DEFAULT_RECONNECT_DELAY_MS,
  DEFAULT_RETENTION_MS,
  DEFAULT_RETRY,
  DEFAULT_SHUTDOWN_TIMEOUT_MS,
} from '../sync.constants.js';
import { type Duration, parseDuration } from './duration.js';
import { resolveRetryPolicy } from './retry-policy.js';

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const KNOWN = new Set<keyof SyncModuleOptions>([
  'service', 'url', 'urls', 'exchange', 'prefetch', 'batchSize', 'retry', 'queueType', 'queueMode', 'dataSource', 'publishTimeout',
  'maxPendingPublishes', 'shutdownTimeout', 'startupTimeout', 'reconnectDelay', 'heartbeat', 'retention', 'outbox',
  'maxMessageBytes', 'handlerTimeout', 'tls',
]);
const OUTBOX_KNOWN = new Set<keyof OutboxOptions>(['outsideTransaction', 'relay', 'pollInterval', 'batchSize', 'retryDelay', 'maxRetryDelay', 'retention']);

/** Validates user options and fills in defaults. Every error names the option and how to fix it. */
export function resolveSyncOptions(options: SyncModuleOptions): ResolvedSyncOptions {
  if (options === null || typeof options !== 'object') {
    throw new InvalidSyncOptionsError('options', 'must be an object', "Call SyncModule.forRoot({ service: 'billing', url: 'amqp://...' }).");
  }
  for (const name of Object.keys(options)) {
    if (!KNOWN.has(name as keyof SyncModuleOptions)) {
      throw new InvalidSyncOptionsError(name, 'is not a known option', `Known options: ${[...KNOWN].join(', ')}.`);
    }
  }
  const resolved: ResolvedSyncOptions = {
    service: resolveName(options.service, 'service', "Name this service, e.g. service: 'billing'."),
    urls: resolveUrls(options),
    exchange: resolveName(options.exchange ?? DEFAULT_EXCHANGE, 'exchange', `Use a plain name such as '${DEFAULT_EXCHANGE}'.`),
    prefetch: resolveInteger(options.prefetch ?? DEFAULT_PREFETCH, 'prefetch', 1, 65_535),
    batchSize: resolveInteger(options.batchSize ?? DEFAULT_BATCH_SIZE, 'batchSize', 1, 1_000),
    retry: resolveRetryPolicy(options.retry ?? { ...DEFAULT_RETRY, delays: [...DEFAULT_RETRY.delays] }, 'retry'),
    queueType: resolveQueueType(options.queueType),
    queueMode: resolveQueueMode(options.queueMode),
    dataSource: resolveDataSource(options.dataSource),
    publishTimeoutMs: resolveDuration(options.publishTimeout, 'publishTimeout', DEFAULT_PUBLISH_TIMEOUT_MS, 1),
    maxPendingPublishes: resolveInteger(options.maxPendingPublishes ?? DEFAULT_MAX_PENDING_PUBLISHES, 'maxPendingPublishes', 1, 10_000_000),
    shutdownTimeoutMs: resolveDuration(options.shutdownTimeout, 'shutdownTimeout', DEFAULT_SHUTDOWN_TIMEOUT_MS, 0),
    startupTimeoutMs: options.startupTimeout === undefined ? undefined : resolveDuration(options.startupTimeout, 'startupTimeout', 0, 1),
    reconnectDelayMs: resolveDuration(options.reconnectDelay, 'reconnectDelay', DEFAULT_RECONNECT_DELAY_MS, 100),
    heartbeat: resolveInteger(options.heartbeat ?? 10, 'heartbeat', 0, 3_600),
    retentionMs: options.retention === false ? false : resolveDuration(options.retention, 'retention', DEFAULT_RETENTION_MS, 60_000),
    outbox: resolveOutbox(options.outbox),
    maxMessageBytes: resolveInteger(options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES, 'maxMessageBytes', 1_024, 512 * 1024 * 1024),
    handlerTimeoutMs: resolveHandlerTimeout(options.handlerTimeout, 'handlerTimeout', DEFAULT_HANDLER_TIMEOUT_MS),
    tls: resolveTls(options.tls),
  };
  if (resolved.tls && resolved.urls.some((url) => !url.startsWith('amqps:'))) {
    throw new InvalidSyncOptionsError('tls', 'is set, but a broker url is plain amqp://, which would not use it', 'Use amqps:// urls (port 5671 by default) with tls.');
  }
  assertRetentionCovers(resolved.retentionMs, resolved.retry.delaysMs, 'the module retry policy');
  return resolved;
}

/**
 * A copy still waiting in a retry tier must find its twin's dedupe row: the rows have to
 * outlive the longest retry chain, or a redelivered event could be applied twice.
 */
export function assertRetentionCovers(retentionMs: number | false, delaysMs: number[], whose: string): void {
  const chainMs = delaysMs.reduce((sum, delay) => sum + delay, 0);
  if (retentionMs !== false && retentionMs <= chainMs) {
    throw new InvalidSyncOptionsError(
      'retention',
      `(${retentionMs} ms) is not longer than the retry chain of ${whose} (${chainMs} ms)`,
      'Keep processed-event ids longer than the longest retry chain (the default is 7 days), or shorten the retry delays.',
    );
  }
}

function resolveOutbox(value: unknown): ResolvedOutboxOptions {
  if (value === false) return { ...resolveOutbox(undefined), enabled: false, relay: false };
  if (value !== undefined && (value === null || typeof value !== 'object')) {
    throw new InvalidSyncOptionsError('outbox', `must be an object or false (got ${JSON.stringify(value)})`, "For example outbox: { outsideTransaction: 'outbox' }, or outbox: false to turn it off.");
  }
  const options = (value ?? {}) as OutboxOptions;
  for (const name of Object.keys(options)) {
    if (!OUTBOX_KNOWN.has(name as keyof OutboxOptions)) {
      throw new InvalidSyncOptionsError(`outbox.${name}`, 'is not a known option', `Known outbox options: ${[...OUTBOX_KNOWN].join(', ')}.`);
    }
  }
  const path = options.outsideTransaction ?? 'broker';
  if (path !== 'broker' && path !== 'outbox') {
    throw new InvalidSyncOptionsError('outbox.outsideTransaction', `must be 'broker' or 'outbox' (got ${JSON.stringify(path)})`, "Use 'broker' to publish at once, 'outbox' to store first.");
  }
  if (options.relay !== undefined && typeof options.relay !== 'boolean') {
    throw new InvalidSyncOptionsError('outbox.relay', `must be true or false (got ${JSON.stringify(options.relay)})`, 'Leave it out to run the relay.');
  }
  const retryDelayMs = resolveDuration(options.retryDelay, 'outbox.retryDelay', DEFAULT_OUTBOX.retryDelayMs, 1);
  const maxRetryDelayMs = resolveDuration(options.maxRetryDelay, 'outbox.maxRetryDelay', Math.max(DEFAULT_OUTBOX.maxRetryDelayMs, retryDelayMs), 1);
  if (maxRetryDelayMs < retryDelayMs) {
    throw new InvalidSyncOptionsError('outbox.maxRetryDelay', `(${maxRetryDelayMs} ms) is shorter than outbox.retryDelay (${retryDelayMs} ms)`, 'Make it at least as long as retryDelay.');
  }
  return {
    enabled: true,
    outsideTransaction: path,
    relay: options.relay ?? true,
    pollIntervalMs: resolveDuration(options.pollInterval, 'outbox.pollInterval', DEFAULT_OUTBOX.pollIntervalMs, 10),
    batchSize: resolveInteger(options.batchSize ?? DEFAULT_OUTBOX.batchSize, 'outbox.batchSize', 1, 10_000),
    retryDelayMs,
    maxRetryDelayMs,
    retentionMs: options.retention === false ? false : resolveDuration(options.retention, 'outbox.retention', DEFAULT_OUTBOX.retentionMs, 60_000),
  };
}

/** A handler timeout: a duration of at least 1 ms, or `false` for none. */
export function resolveHandlerTimeout(value: unknown, option: string, fallback: number | false): number | false {
  if (value === undefined || value === false) return value ?? fallback;
  return resolveDuration(value as Duration, option, 0, 1);
}

function resolveTls(value: unknown): ResolvedSyncOptions['tls'] {
  if (value === undefined) return undefined;
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new InvalidSyncOptionsError('tls', 'must be an object of TLS options', "For example tls: { ca: readFileSync('ca.pem') }, with an amqps:// url.");
  }
  return value as ResolvedSyncOptions['tls'];
}

function resolveName(value: unknown, option: string, fix: string): string {
  if (typeof value !== 'string' || value.length === 0) {
    throw new InvalidSyncOptionsError(option, value === undefined ? 'is required' : 'must be a non-empty string', fix);
  }
  if (!NAME.test(value) || value.length > 200) {
    throw new InvalidSyncOptionsError(option, `has characters RabbitMQ names should not carry (got "${value}")`, `Use letters, digits, '.', '_' and '-'. ${fix}`);
  }
  return value;
}

function resolveUrls(options: SyncModuleOptions): string[] {
  if (options.url !== undefined && options.urls !== undefined) {
    throw new InvalidSyncOptionsError('url', 'and `urls` are both set', 'Give one of them: url for one broker, urls for a cluster.');
  }
  const urls = options.urls ?? (options.url === undefined ? undefined : [options.url]);
  const option = options.urls ? 'urls' : 'url';
  if (!urls || !Array.isArray(urls) || urls.length === 0) {
    throw new InvalidSyncOptionsError('url', 'is required', "Pass the broker's address, e.g. url: 'amqp://guest:guest@127.0.0.1:5672'.");
  }
  for (const url of urls) {
    let parsed: URL | undefined;
    try {
      parsed = typeof url === 'string' ? new URL(url) : undefined;
    } catch {
      parsed = undefined;
    }
    if (!parsed || (parsed.protocol !== 'amqp:' && parsed.protocol !== 'amqps:')) {
      throw new InvalidSyncOptionsError(option, 'must be an amqp:// or amqps:// URL', "For example 'amqp://user:pass@127.0.0.1:5672/vhost'.");
    }
    // A password with '#', '/', '?' or '@' left unencoded ends the host early: the rest would be read (and logged) as a path or fragment.
    if (url.includes('@') && (parsed.username === '' || parsed.hash !== '' || parsed.search.includes('@') || parsed.pathname.includes('@'))) {
      throw new InvalidSyncOptionsError(
        option,
        'does not parse as user:password@host (the URL itself is not repeated here, as it may hold a password)',
        'Percent-encode the user name and password, e.g. `amqp://${encodeURIComponent(user)}:${encodeURIComponent(password)}@host:5672`.',
      );
    }
  }
  return urls;
}

function resolveInteger(value: unknown, option: string, min: number, max: number): number {
  if (!Number.isInteger(value) || (value as number) < min || (value as number) > max) {
    throw new InvalidSyncOptionsError(option, `must be an integer from ${min} to ${max} (got ${JSON.stringify(value)})`, 'Fix the value or leave it out for the default.');
  }
  return value as number;
}

function resolveDuration(value: Duration | undefined, option: string, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  const ms = parseDuration(value);
  if (ms === undefined || ms < min) {
    throw new InvalidSyncOptionsError(option, `is not a valid duration (got ${JSON.stringify(value)})`, "Use milliseconds or a string with a unit: '500ms', '30s', '5m', '1h'.");
  }
  return ms;
}

function resolveQueueType(value: unknown): 'classic' | 'quorum' {
  if (value === undefined) return 'classic';
  if (value !== 'classic' && value !== 'quorum') {
    throw new InvalidSyncOptionsError('queueType', `must be 'classic' or 'quorum' (got ${JSON.stringify(value)})`, "Use 'quorum' on a cluster, or leave it out.");
  }
  return value;
}

function resolveQueueMode(value: unknown): 'lazy' | 'default' {
  if (value === undefined) return 'lazy';
  if (value !== 'lazy' && value !== 'default') {
    throw new InvalidSyncOptionsError('queueMode', `must be 'lazy' or 'default' (got ${JSON.stringify(value)})`, "Leave it out for lazy queues, or use 'default' for RabbitMQ's own mode.");
  }
  return value;
}

function resolveDataSource(value: unknown): DataSource | string | undefined {
  if (value === undefined || typeof value === 'string' || value instanceof DataSource) return value;
  throw new InvalidSyncOptionsError('dataSource', 'must be a TypeORM DataSource or the name of one', 'Pass the DataSource instance, or the name given to TypeOrmModule.forRoot({ name }).');
}

/**
 * `amqp://user:secret@host` -> `amqp://user:***@host`, for logs. It cuts at the last '@' of the
 * raw string, so a password that does not parse as one (unencoded '#', '/', '?') is masked too.
 */
export function maskUrl(url: string): string {
  const start = url.indexOf('://');
  const at = url.lastIndexOf('@');
  if (start < 0) return '<invalid url>';
  if (at < start) return url.replace(/\/$/, '');
  const userinfo = url.slice(start + 3, at);
  const separator = userinfo.indexOf(':');
  const user = separator < 0 ? userinfo : userinfo.slice(0, separator);
  return `${url.slice(0, start + 3)}${separator < 0 ? user : `${user}:***`}${url.slice(at)}`.replace(/\/$/, '');
}
