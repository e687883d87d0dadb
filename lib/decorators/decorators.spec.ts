import { InvalidDecoratorUsageError } from '../errors/invalid-decorator-usage.error.js';
import { ON_EVENT_METADATA, PUBLISHES_EVENT_METADATA } from '../sync.constants.js';
import { OnEvent, OnSyncEvent } from './on-event.decorator.js';
import { bindPublisher, PublishesEvent } from './publishes-event.decorator.js';

describe('@OnEvent', () => {
  it('stores the event types and options under a namespaced key', () => {
    class Handler {
      @OnEvent(['UserCreated', 'UserUpdated', 'UserCreated'], { consumer: 'users-copy', concurrency: 2 })
      handle() {}
    }
    expect(Reflect.getMetadata(ON_EVENT_METADATA, Handler.prototype.handle)).toEqual({
      eventTypes: ['UserCreated', 'UserUpdated'],
      options: { consumer: 'users-copy', concurrency: 2 },
    });
    expect(OnSyncEvent).toBe(OnEvent);
  });

  it.each([
    [() => OnEvent('User*'), /not valid/],
    [() => OnEvent([]), /at least one event type/],
    [() => OnEvent('X', { consumer: 'has space' }), /consumer/],
    [() => OnEvent('X', { concurrency: 0 }), /concurrency/],
    [() => OnEvent('X', { retry: { attempts: 3 } }), /retry.delays/],
    [() => OnEvent('X', { batchSize: 0 }), /batchSize/],
    [() => OnEvent('X', { ordering: 'global' as never }), /ordering must be 'key'/],
    [() => OnEvent('X', { handlerTimeout: 'soon' }), /option `handlerTimeout` is not a valid duration/],
    [() => OnEvent('X', { handlerTimeout: 0 }), /option `handlerTimeout` is not a valid duration/],
    [() => OnEvent('X', { partitions: 1 }), /partitions must be an integer from 2 to 64/],
    [() => OnEvent('X', { partitions: 4, concurrency: 2 }), /concurrency cannot be combined with partitions/],
    [() => OnEvent('X', { parallel: 'yes' as never }), /parallel must be true or false/],
    [() => OnEvent('X', { partitions: 4, parallel: true }), /parallel cannot be combined with partitions/],
    [() => PublishesEvent('X', { sequence: 3 as never }), /sequence must be a function/],
  ])('fails when applied wrongly (%#)', (apply, message) => {
    expect(apply).toThrow(InvalidDecoratorUsageError);
    expect(apply).toThrow(message);
  });
});

describe('@PublishesEvent', () => {
  const published: Array<{ data: unknown; key?: string }> = [];
  const port = {
    publishResult: async (metadata: { options: { map?: Function; key?: Function } }, result: unknown, args: unknown[]) => {
      published.push({ data: metadata.options.map ? metadata.options.map(result, args) : result, key: metadata.options.key?.(result, args) });
    },
    track: (pending: Promise<unknown>) => void pending,
  };

  class Service {
    @PublishesEvent('UserCreated', { key: (user: { id: string }) => user.id })
    async create(name: string) {
      return { id: `u-${name}`, name };
    }

    @PublishesEvent('UserRenamed', { map: (result: string, args: unknown[]) => ({ result, from: args[0] }) })
    rename(name: string) {
      return name.toUpperCase();
    }

    @PublishesEvent('Never')
    async fail(): Promise<void> {
      throw new Error('nope');
    }
  }

  beforeEach(() => (published.length = 0));

  it('publishes the resolved value with its key and returns the value', async () => {
    const service = new Service();
    bindPublisher(service, port as never);
    await expect(service.create('ann')).resolves.toEqual({ id: 'u-ann', name: 'ann' });
    expect(published).toEqual([{ data: { id: 'u-ann', name: 'ann' }, key: 'u-ann' }]);
  });

  it('keeps a sync method sync and maps its result', () => {
    const service = new Service();
    bindPublisher(service, port as never);
    expect(service.rename('bob')).toBe('BOB');
    expect(published).toEqual([{ data: { result: 'BOB', from: 'bob' }, key: undefined }]);
  });

  it('publishes nothing when the method throws', async () => {
    const service = new Service();
    bindPublisher(service, port as never);
    await expect(service.fail()).rejects.toThrow('nope');
    expect(published).toEqual([]);
  });

  it('refuses to run unbound instead of dropping the event', () => {
    expect(() => new Service().rename('x')).toThrow(/not managed by an application that imports SyncModule/);
  });

  it('keeps metadata other decorators put on the method', () => {
    const marker = (target: object, key: string | symbol, descriptor: PropertyDescriptor) => {
      Reflect.defineMetadata('test:marker', 'kept', descriptor.value);
    };
    class Controller {
      @PublishesEvent('A')
      @marker
      handle() {
        return 1;
      }
    }
    expect(Reflect.getMetadata('test:marker', Controller.prototype.handle)).toBe('kept');
    expect(Reflect.getMetadata(PUBLISHES_EVENT_METADATA, Controller.prototype.handle)).toMatchObject({ eventType: 'A' });
  });
});
