import type { MigrationInterface, QueryRunner } from 'typeorm';
import { dialectOf } from '../dialect.js';

const UP = {
  postgres: [
    `CREATE TABLE IF NOT EXISTS "sync_key_offsets" (
      "consumer" character varying(200) NOT NULL,
      "event_key" character varying(200) NOT NULL,
      "sequence" bigint,
      "updated_at" TIMESTAMP NOT NULL DEFAULT now(),
      CONSTRAINT "PK_sync_key_offsets" PRIMARY KEY ("consumer", "event_key"))`,
  ],
  mysql: [
    `CREATE TABLE IF NOT EXISTS \`sync_key_offsets\` (
      \`consumer\` varchar(200) NOT NULL,
      \`event_key\` varchar(200) NOT NULL,
      \`sequence\` bigint NULL,
      \`updated_at\` datetime(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
      PRIMARY KEY (\`consumer\`, \`event_key\`)) ENGINE=InnoDB`,
  ],
  sqlite: [
    `CREATE TABLE IF NOT EXISTS "sync_key_offsets" (
      "consumer" varchar(200) NOT NULL,
      "event_key" varchar(200) NOT NULL,
      "sequence" bigint,
      "updated_at" datetime NOT NULL DEFAULT (datetime('now')),
      CONSTRAINT "PK_sync_key_offsets" PRIMARY KEY ("consumer", "event_key"))`,
  ],
};

const DOWN = {
  postgres: [`DROP TABLE IF EXISTS "sync_key_offsets"`],
  mysql: ['DROP TABLE IF EXISTS `sync_key_offsets`'],
  sqlite: [`DROP TABLE IF EXISTS "sync_key_offsets"`],
};

/** Creates the per-key sequence table of the stale-event guard (`ordering: 'key'`). */
export class CreateSyncKeyOffsets1764288000000 implements MigrationInterface {
  name = 'CreateSyncKeyOffsets1764288000000';

  async up(queryRunner: QueryRunner): Promise<void> {
    for (const sql of UP[dialectOf(queryRunner.connection.options.type)]) await queryRunner.query(sql);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    for (const sql of DOWN[dialectOf(queryRunner.connection.options.type)]) await queryRunner.query(sql);
  }
}
