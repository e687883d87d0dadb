import type { MigrationInterface, QueryRunner } from 'typeorm';
import { dialectOf } from '../dialect.js';

const UP = {
  postgres: [
    `CREATE TABLE IF NOT EXISTS "sync_outbox" (
      "event_id" character varying(200) NOT NULL,
      "position" bigint NOT NULL,
      "event_type" character varying(200) NOT NULL,
      "source" character varying(200) NOT NULL,
      "routing_key" character varying(255) NOT NULL,
      "event_key" character varying(200),
      "payload" text NOT NULL,
      "headers" text,
      "created_at" TIMESTAMP NOT NULL DEFAULT now(),
      "published_at" TIMESTAMP,
      "attempts" integer NOT NULL DEFAULT 0,
      "next_attempt_at" bigint,
      "last_error" text,
      CONSTRAINT "PK_sync_outbox" PRIMARY KEY ("event_id"))`,
    `CREATE INDEX IF NOT EXISTS "IDX_sync_outbox_pending" ON "sync_outbox" ("source", "published_at", "position")`,
    `CREATE INDEX IF NOT EXISTS "IDX_sync_outbox_published_at" ON "sync_outbox" ("published_at")`,
  ],
  mysql: [
    `CREATE TABLE IF NOT EXISTS \`sync_outbox\` (
      \`event_id\` varchar(200) NOT NULL,
      \`position\` bigint NOT NULL,
      \`event_type\` varchar(200) NOT NULL,
      \`source\` varchar(200) NOT NULL,
      \`routing_key\` varchar(255) NOT NULL,
      \`event_key\` varchar(200) NULL,
      \`payload\` text NOT NULL,
      \`headers\` text NULL,
      \`created_at\` datetime(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
      \`published_at\` datetime(6) NULL,
      \`attempts\` int NOT NULL DEFAULT 0,
      \`next_attempt_at\` bigint NULL,
      \`last_error\` text NULL,
      INDEX \`IDX_sync_outbox_pending\` (\`source\`, \`published_at\`, \`position\`),
      INDEX \`IDX_sync_outbox_published_at\` (\`published_at\`),
      PRIMARY KEY (\`event_id\`)) ENGINE=InnoDB`,
  ],
  sqlite: [
    `CREATE TABLE IF NOT EXISTS "sync_outbox" (
      "event_id" varchar(200) NOT NULL,
      "position" bigint NOT NULL,
      "event_type" varchar(200) NOT NULL,
      "source" varchar(200) NOT NULL,
      "routing_key" varchar(255) NOT NULL,
      "event_key" varchar(200),
      "payload" text NOT NULL,
      "headers" text,
      "created_at" datetime NOT NULL DEFAULT (datetime('now')),
      "published_at" datetime,
      "attempts" integer NOT NULL DEFAULT 0,
      "next_attempt_at" bigint,
      "last_error" text,
      CONSTRAINT "PK_sync_outbox" PRIMARY KEY ("event_id"))`,
    `CREATE INDEX IF NOT EXISTS "IDX_sync_outbox_pending" ON "sync_outbox" ("source", "published_at", "position")`,
    `CREATE INDEX IF NOT EXISTS "IDX_sync_outbox_published_at" ON "sync_outbox" ("published_at")`,
  ],
};

const DOWN = {
  postgres: [`DROP TABLE IF EXISTS "sync_outbox"`],
  mysql: ['DROP TABLE IF EXISTS `sync_outbox`'],
  sqlite: [`DROP TABLE IF EXISTS "sync_outbox"`],
};

/** Creates the transactional outbox table on PostgreSQL, MySQL/MariaDB or SQLite. */
export class CreateSyncOutbox1764201600000 implements MigrationInterface {
  name = 'CreateSyncOutbox1764201600000';

  async up(queryRunner: QueryRunner): Promise<void> {
    for (const sql of UP[dialectOf(queryRunner.connection.options.type)]) await queryRunner.query(sql);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    for (const sql of DOWN[dialectOf(queryRunner.connection.options.type)]) await queryRunner.query(sql);
  }
}
