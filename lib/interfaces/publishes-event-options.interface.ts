export interface PublishesEventOptions<TResult = any, TArgs extends unknown[] = any[]> {
  /** The event's key (an aggregate id): ordering and partitioning follow it. */
  key?: (result: TResult, args: TArgs) => string | number | undefined;
  /** Turns the method's result into the event's `data`. Default: the result itself. */
  map?: (result: TResult, args: TArgs) => unknown;
}

export interface PublishesEventMetadata {
  eventType: string;
  options: PublishesEventOptions;
}
