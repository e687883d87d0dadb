import { InvalidSyncOptionsError } from '../errors/invalid-sync-options.error.js';
import { maskUrl, resolveSyncOptions } from './resolve-options.js';
import { resolveRetryPolicy } from './retry-policy.js';

const base = { service: 'billing', url: 'amqp://guest:guest@127.0.0.1:5672' };

describe('resolveSyncOptions', () => {
  it('fills in defaults', () => {
    const resolved = resolveSyncOptions(base);
    expect(resolved).toMatchObject({
      service: 'billing',
      urls: [base.url],
      exchange: 'sync.events',
      prefetch: 50,
      batchSize: 50,
      queueType: 'classic',
      queueMode: 'lazy',
      publishTimeoutMs: 30_000,
      retry: { attempts: 5, delaysMs: [1_000, 10_000, 60_000, 300_000] },
      outbox: { enabled: true, outsideTransaction: 'broker', relay: true, pollIntervalMs: 1_000, batchSize: 100, retryDelayMs: 1_000, maxRetryDelayMs: 60_000, retentionMs: 86_400_000 },
    });
  });

  it('bounds messages at 1 MiB and handler runs at 30s by default, and takes other limits and TLS options', () => {
    expect(resolveSyncOptions(base)).toMatchObject({ maxMessageBytes: 1_048_576, handlerTimeoutMs: 30_000, tls: undefined });
    expect(resolveSyncOptions({ ...base, maxMessageBytes: 4_096, handlerTimeout: '2m' })).toMatchObject({ maxMessageBytes: 4_096, handlerTimeoutMs: 120_000 });
    expect(resolveSyncOptions({ ...base, handlerTimeout: false }).handlerTimeoutMs).toBe(false);
    const tls = { ca: 'PEM', servername: 'broker.local' };
    expect(resolveSyncOptions({ ...base, url: 'amqps://u:p@broker.local', tls }).tls).toBe(tls);
  });

  it('turns the outbox off with outbox: false, and takes its options', () => {
    expect(resolveSyncOptions({ ...base, outbox: false }).outbox).toMatchObject({ enabled: false, relay: false });
    expect(resolveSyncOptions({ ...base, outbox: { outsideTransaction: 'outbox', retryDelay: '2m', retention: false } }).outbox).toMatchObject({
      outsideTransaction: 'outbox',
      retryDelayMs: 120_000,
      maxRetryDelayMs: 120_000,
      retentionMs: false,
    });
  });

  it.each([
    [{ url: base.url }, 'service', /is required/],
    [{ service: 'billing' }, 'url', /is required/],
    [{ ...base, service: 'bill ing' }, 'service', /characters/],
    [{ ...base, url: 'http://x' }, 'url', /amqp:\/\//],
    [{ ...base, urls: [base.url] }, 'url', /both set/],
    [{ ...base, prefetch: 0 }, 'prefetch', /integer from 1/],
    [{ ...base, queueType: 'stream' }, 'queueType', /'classic' or 'quorum'/],
    [{ ...base, queueMode: 'memory' }, 'queueMode', /'lazy' or 'default'/],
    [{ ...base, publishTimeout: '30 seconds' }, 'publishTimeout', /not a valid duration/],
    [{ ...base, retry: { attempts: 0 } }, 'retry.attempts', /integer from 1/],
    [{ ...base, retry: { attempts: 3, delays: ['1x'] } }, 'retry.delays[0]', /not a valid delay/],
    [{ ...base, dataSource: 42 }, 'dataSource', /DataSource/],
    [{ ...base, prefecth: 10 }, 'prefecth', /not a known option/],
    [{ ...base, outbox: true }, 'outbox', /object or false/],
    [{ ...base, outbox: { relays: 2 } }, 'outbox.relays', /not a known option/],
    [{ ...base, outbox: { outsideTransaction: 'queue' } }, 'outbox.outsideTransaction', /'broker' or 'outbox'/],
    [{ ...base, outbox: { batchSize: 0 } }, 'outbox.batchSize', /integer from 1/],
    [{ ...base, outbox: { pollInterval: 'soon' } }, 'outbox.pollInterval', /not a valid duration/],
    [{ ...base, outbox: { retryDelay: '10s', maxRetryDelay: '1s' } }, 'outbox.maxRetryDelay', /shorter than outbox.retryDelay/],
    [{ ...base, outbox: { relay: 'yes' } }, 'outbox.relay', /true or false/],
    [{ ...base, maxMessageBytes: 10 }, 'maxMessageBytes', /integer from 1024/],
    [{ ...base, maxMessageBytes: '1MB' }, 'maxMessageBytes', /integer from 1024/],
    [{ ...base, handlerTimeout: 0 }, 'handlerTimeout', /not a valid duration/],
    [{ ...base, handlerTimeout: true }, 'handlerTimeout', /not a valid duration/],
    [{ ...base, tls: 'on' }, 'tls', /object of TLS options/],
    [{ ...base, tls: { rejectUnauthorized: true } }, 'tls', /plain amqp:\/\//],
  ])('rejects %j naming %s', (options, option, message) => {
    let error: unknown;
    try {
      resolveSyncOptions(options as never);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(InvalidSyncOptionsError);
    expect((error as InvalidSyncOptionsError).option).toBe(option);
    expect((error as Error).message).toMatch(message);
    expect((error as Error).message).toContain(`\`${option}\``);
  });
});

describe('resolveRetryPolicy', () => {
  it('counts the first run in attempts and repeats the last delay', () => {
    expect(resolveRetryPolicy({ attempts: 4, delays: ['1s', '10s', '1m'] }, 'retry')).toEqual({
      attempts: 4,
      delaysMs: [1_000, 10_000, 60_000],
    });
    expect(resolveRetryPolicy({ attempts: 5, delays: [200, '1s'] }, 'retry').delaysMs).toEqual([200, 1_000, 1_000, 1_000]);
  });

  it('turns false into a single attempt', () => {
    expect(resolveRetryPolicy(false, 'retry')).toEqual({ attempts: 1, delaysMs: [] });
  });

  it('needs a delay when it retries', () => {
    expect(() => resolveRetryPolicy({ attempts: 2 }, 'retry')).toThrow(/retry.delays/);
  });
});

describe('maskUrl', () => {
  it('hides the password', () => {
    expect(maskUrl('amqp://user:s3cret@host:5672/vh')).toBe('amqp://user:***@host:5672/vh');
    expect(maskUrl('amqp://host')).toBe('amqp://host');
    expect(maskUrl('amqps://user:p%40ss@host/')).toBe('amqps://user:***@host');
  });

  it('hides a password whose special characters were not encoded', () => {
    const url = 'amqp://user:52564#S3cr!%7,1@5+f@a^3*c@2+@127.0.0.1:5672';
    expect(maskUrl(url)).toBe('amqp://user:***@127.0.0.1:5672');
  });
});

describe('url validation', () => {
  it.each([
    ['amqp://user:52564#S3cr!t@127.0.0.1:5672', /Percent-encode the user name and password/],
    ['amqp://user:Zq9/x@127.0.0.1:5672', /amqp:\/\/ or amqps:\/\/ URL/],
    ['amqp://user:Zq9?x@127.0.0.1:5672', /amqp:\/\/ or amqps:\/\/ URL/],
  ])('refuses %s without repeating its password', (url, message) => {
    let error: unknown;
    try {
      resolveSyncOptions({ ...base, url });
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(InvalidSyncOptionsError);
    expect((error as Error).message).toMatch(message);
    expect((error as Error).message).not.toMatch(/S3cr|Zq9/);
  });
});
