/** Deduplication needs a TypeORM DataSource and none could be found. */
export class MissingDataSourceError extends Error {
  constructor(name: string | undefined) {
    super(
      `SyncModule needs a TypeORM DataSource to record processed events, and found none` +
        `${name ? ` named "${name}"` : ''}. Import TypeOrmModule.forRoot({ ..., autoLoadEntities: true }) ` +
        `in the same application, or pass the option \`dataSource\` (a DataSource instance or its name).`,
    );
    this.name = 'MissingDataSourceError';
  }
}
