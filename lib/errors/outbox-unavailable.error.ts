/** A transactional publish was asked for while the outbox is turned off or not initialised yet. */
export class OutboxUnavailableError extends Error {
  constructor() {
    super(
      'The transactional outbox is not available: it is turned off (outbox: false in SyncModule.forRoot) or the ' +
        'application has not been initialised yet. Remove outbox: false, and call SyncPublisher.transaction() after app.init().',
    );
    this.name = 'OutboxUnavailableError';
  }
}
