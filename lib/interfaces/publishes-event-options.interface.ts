export interface PublishesEventOptions<TResult = any, TArgs extends unknown[] = any[]> {
  /** The event's key (an aggregate id): ordering and partitioning follow it. */
  key?: (result: TResult, args: TArgs) => string | number | undefined;
  /**
   * The event's sequence within its key (for example a TypeORM `@VersionColumn`): consumers
   * with `ordering: 'key'` skip an event whose sequence is not newer than the last one applied.
   */
  sequence?: (result: TResult, args: TArgs) => number | undefined;
  /** Turns the method's result into the event's `data`. Default: the result itself. */
  map?: (result: TResult, args: TArgs) => unknown;
}

export interface PublishesEventMetadata {
  eventType: string;
  options: PublishesEventOptions;
}
