import { DuplicateConsumerError } from '../errors/duplicate-consumer.error.js';
import { InvalidDecoratorUsageError } from '../errors/invalid-decorator-usage.error.js';
import { resolveSyncOptions } from '../options/resolve-options.js';
import { SyncServer } from './sync.server.js';

// Port 1 refuses at once: these checks must fail before any connection is attempted.
const options = resolveSyncOptions({ service: 'svc', url: 'amqp://127.0.0.1:1', startupTimeout: 200 });

function server(): SyncServer {
  const instance = new SyncServer(options);
  instance.usePipeline({} as never);
  return instance;
}

describe('SyncServer serving @EventPattern handlers', () => {
  it('refuses a wildcard pattern at startup, naming it', async () => {
    const instance = server();
    instance.addHandler('user.*', async () => undefined, true);
    await expect(instance.start()).rejects.toThrow(InvalidDecoratorUsageError);
    await expect(instance.start()).rejects.toThrow(/user\.\*.*wildcards are not supported/s);
  });

  it('refuses a consumer name that cannot name a queue', async () => {
    const instance = server();
    instance.addHandler('UserCreated', async () => undefined, true, { consumer: 'has space' });
    await expect(instance.start()).rejects.toThrow(/extras: consumer "has space" is not valid/);
  });

  it('refuses two patterns that resolve to one consumer name', async () => {
    const instance = server();
    instance.addHandler('UserCreated', async () => undefined, true, { consumer: 'users' });
    instance.addHandler('UserUpdated', async () => undefined, true, { consumer: 'users' });
    await expect(instance.start()).rejects.toThrow(DuplicateConsumerError);
  });

  it('keeps consumer names unique and reports handlers not yet started as stopped', () => {
    const instance = server();
    instance.register({ consumer: 'a', queue: 'svc.a', eventTypes: ['A'], retry: options.retry, concurrency: 1, batchSize: 1, parallel: false, handlerTimeoutMs: false, label: 'X.a', handler: async () => undefined });
    expect(() =>
      instance.register({ consumer: 'a', queue: 'svc.a', eventTypes: ['B'], retry: options.retry, concurrency: 1, batchSize: 1, parallel: false, handlerTimeoutMs: false, label: 'Y.b', handler: async () => undefined }),
    ).toThrow(/X\.a and Y\.b/);
    expect(instance.consumerStatus()).toEqual([{ consumer: 'a', queue: 'svc.a', state: 'stopped', inFlight: 0 }]);
  });
});
