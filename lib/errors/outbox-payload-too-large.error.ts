/** An event is larger than `sync_outbox.payload` holds (TEXT, 65,535 bytes, on MySQL/MariaDB). */
export class OutboxPayloadTooLargeError extends Error {
  constructor(
    readonly eventType: string,
    readonly bytes: number,
    cause: unknown,
  ) {
    super(
      `Cannot write ${eventType} to the outbox: its envelope is ${bytes} bytes, more than the column sync_outbox.payload ` +
        'holds on MySQL/MariaDB (TEXT, 65,535 bytes); the transaction was rolled back. Publish smaller events (ids rather ' +
        'than whole documents), or widen the column: ALTER TABLE sync_outbox MODIFY payload LONGTEXT NOT NULL.',
      { cause },
    );
    this.name = 'OutboxPayloadTooLargeError';
  }
}
