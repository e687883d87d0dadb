import type { MigrationInterface, QueryRunner } from 'typeorm';
import { dialectOf } from '../dialect.js';

const UP = {
  postgres: [
    `CREATE TABLE IF NOT EXISTS "sync_processed_events" (
      "consumer" character varying(200) NOT NULL,
      "event_id" character varying(200) NOT NULL,
      "processed_at" TIMESTAMP NOT NULL DEFAULT now(),
      CONSTRAINT "PK_sync_processed_events" PRIMARY KEY ("consumer", "event_id"))`,
    `CREATE INDEX IF NOT EXISTS "IDX_sync_processed_events_processed_at" ON "sync_processed_events" ("processed_at")`,
  ],
  mysql: [
    `CREATE TABLE IF NOT EXISTS \`sync_processed_events\` (
      \`consumer\` varchar(200) NOT NULL,
      \`event_id\` varchar(200) NOT NULL,
      \`processed_at\` datetime(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
      INDEX \`IDX_sync_processed_events_processed_at\` (\`processed_at\`),
      PRIMARY KEY (\`consumer\`, \`event_id\`)) ENGINE=InnoDB`,
  ],
  sqlite: [
    `CREATE TABLE IF NOT EXISTS "sync_processed_events" (
      "consumer" varchar(200) NOT NULL,
      "event_id" varchar(200) NOT NULL,
      "processed_at" datetime NOT NULL DEFAULT (datetime('now')),
      CONSTRAINT "PK_sync_processed_events" PRIMARY KEY ("consumer", "event_id"))`,
    `CREATE INDEX IF NOT EXISTS "IDX_sync_processed_events_processed_at" ON "sync_processed_events" ("processed_at")`,
  ],
};

const DOWN = {
  postgres: [`DROP TABLE IF EXISTS "sync_processed_events"`],
  mysql: ['DROP TABLE IF EXISTS `sync_processed_events`'],
  sqlite: [`DROP TABLE IF EXISTS "sync_processed_events"`],
};

/** Creates the dedupe table on PostgreSQL, MySQL/MariaDB or SQLite. */
export class CreateSyncProcessedEvents1764115200000 implements MigrationInterface {
  name = 'CreateSyncProcessedEvents1764115200000';

  async up(queryRunner: QueryRunner): Promise<void> {
    for (const sql of UP[dialectOf(queryRunner.connection.options.type)]) await queryRunner.query(sql);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    for (const sql of DOWN[dialectOf(queryRunner.connection.options.type)]) await queryRunner.query(sql);
  }
}
