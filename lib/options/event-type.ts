import { InvalidDecoratorUsageError } from '../errors/invalid-decorator-usage.error.js';

const EVENT_TYPE = /^[A-Za-z0-9_.:-]{1,200}$/;

/** Event types are routing keys: plain words, no AMQP wildcards. */
export function assertEventType(eventType: unknown, where: string): asserts eventType is string {
  if (typeof eventType !== 'string' || !EVENT_TYPE.test(eventType)) {
    throw new InvalidDecoratorUsageError(
      `${where}: event type ${JSON.stringify(eventType)} is not valid. Use a name such as 'UserCreated' ` +
        `(letters, digits, '_', '.', ':', '-'; no '*' or '#', at most 200 characters).`,
    );
  }
}
