/** An event's envelope is larger than `maxMessageBytes`, which consumers would dead-letter unread. */
export class EventTooLargeError extends Error {
  constructor(
    readonly eventType: string,
    readonly bytes: number,
    readonly maxBytes: number,
  ) {
    super(
      `Cannot publish ${eventType}: its envelope is ${bytes} bytes, more than maxMessageBytes (${maxBytes}). ` +
        'Publish smaller events (ids and changed fields rather than whole documents), or raise maxMessageBytes on publishers and consumers alike.',
    );
    this.name = 'EventTooLargeError';
  }
}
