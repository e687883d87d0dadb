/** Two handlers resolved to the same consumer name, so they would share one queue. */
export class DuplicateConsumerError extends Error {
  constructor(
    readonly consumer: string,
    first: string,
    second: string,
  ) {
    super(
      `Two handlers use the consumer name "${consumer}" (${first} and ${second}), so they would share ` +
        `one queue and one dedupe record. Give one of them its own name: @OnEvent(type, { consumer: '...' }).`,
    );
    this.name = 'DuplicateConsumerError';
  }
}
