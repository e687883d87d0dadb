import { InvalidDecoratorUsageError } from '../errors/invalid-decorator-usage.error.js';
import type { PublishesEventMetadata, PublishesEventOptions } from '../interfaces/publishes-event-options.interface.js';
import { assertEventType } from '../options/event-type.js';
import { PUBLISHES_EVENT_METADATA } from '../sync.constants.js';

/** What a decorated method needs to publish: bound per instance when the module discovers it. */
export interface EventEmitterPort {
  publishResult(metadata: PublishesEventMetadata, result: unknown, args: unknown[]): Promise<unknown>;
  track(pending: Promise<unknown>, metadata: PublishesEventMetadata): void;
}

const bindings = new WeakMap<object, EventEmitterPort>();

/** @internal Connects an instance's decorated methods to its application's publisher. */
export function bindPublisher(instance: object, port: EventEmitterPort): void {
  bindings.set(instance, port);
}

/**
 * Publishes the method's result as an event once it has returned (or resolved): `data` is the
 * result, or `map(result, args)`. If the method throws, nothing is published; the caller
 * always gets the method's own value. An async method resolves only after the broker has
 * confirmed the event (and rejects if it could not be); a sync method returns at once and its
 * publish is tracked and logged.
 */
export function PublishesEvent<TResult = any, TArgs extends unknown[] = any[]>(
  eventType: string,
  options: PublishesEventOptions<TResult, TArgs> = {},
): MethodDecorator {
  assertEventType(eventType, '@PublishesEvent');
  if (options.key !== undefined && typeof options.key !== 'function') {
    throw new InvalidDecoratorUsageError('@PublishesEvent option key must be a function of the result, e.g. { key: (user) => user.id }.');
  }
  if (options.sequence !== undefined && typeof options.sequence !== 'function') {
    throw new InvalidDecoratorUsageError('@PublishesEvent option sequence must be a function of the result, e.g. { sequence: (user) => user.version }.');
  }
  if (options.map !== undefined && typeof options.map !== 'function') {
    throw new InvalidDecoratorUsageError('@PublishesEvent option map must be a function (result, args) => data.');
  }
  const metadata: PublishesEventMetadata = { eventType, options: options as PublishesEventOptions };
  return (target, propertyKey, descriptor: PropertyDescriptor) => {
    const original = descriptor.value;
    if (typeof original !== 'function') {
      throw new InvalidDecoratorUsageError(`@PublishesEvent can only decorate methods; ${String(propertyKey)} is not one.`);
    }
    const label = `${target.constructor.name}.${String(propertyKey)}`;
    const wrapped = function (this: object, ...args: unknown[]) {
      const port = bindings.get(this);
      if (!port) {
        throw new Error(
          `${label} is decorated with @PublishesEvent('${eventType}') but its instance is not managed by an application ` +
            `that imports SyncModule (or is request-scoped). Import SyncModule.forRoot() and get the instance from Nest.`,
        );
      }
      const result = original.apply(this, args);
      if (result instanceof Promise) return result.then((value) => port.publishResult(metadata, value, args).then(() => value));
      port.track(port.publishResult(metadata, result, args), metadata);
      return result;
    };
    copyMetadata(original, wrapped);
    Object.defineProperty(wrapped, 'name', { value: original.name });
    descriptor.value = wrapped;
    Reflect.defineMetadata(PUBLISHES_EVENT_METADATA, metadata, wrapped);
    return descriptor;
  };
}

/** Keeps what other decorators stored on the method (routes, guards, …) on the wrapper. */
function copyMetadata(from: object, to: object): void {
  for (const key of Reflect.getOwnMetadataKeys(from)) {
    Reflect.defineMetadata(key, Reflect.getOwnMetadata(key, from), to);
  }
}
