/** The outbox is on, but one of its tables does not exist in the DataSource: a migration has not run. */
export class OutboxTableMissingError extends Error {
  constructor(
    readonly table: string,
    migration: string,
    cause: unknown,
  ) {
    super(
      `The transactional outbox needs the table ${table}, which the database refused (${cause instanceof Error ? cause.message : String(cause)}). ` +
        `Run the migrations in SYNC_MIGRATIONS (${migration} creates it), or use TypeORM synchronize with ` +
        'the entities in SYNC_ENTITIES in development; set outbox: false in SyncModule.forRoot() if this service never publishes transactionally.',
      { cause },
    );
    this.name = 'OutboxTableMissingError';
  }
}
