/** A decorator of this library was applied with arguments that cannot work. */
export class InvalidDecoratorUsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidDecoratorUsageError';
  }
}
