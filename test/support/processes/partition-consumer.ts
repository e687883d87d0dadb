/**
 * A partitioned consumer in a process of its own, for the test that kills it.
 * Env: SERVICE, EXCHANGE, CONSUMER, INSTANCE, PARTITIONS, DATABASE_URL (PostgreSQL), HANDLER_MS.
 * Prints `READY` once started, then `PARTITIONS <list>` whenever the partitions it owns change;
 * stays up until SIGTERM (graceful close) or SIGKILL.
 */
import { Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { SyncModule, SyncServer } from '../../../lib/index.js';
import { AMQP_URL } from '../env.js';
import { PartitionApplied, partitionedHandler } from './partition-app.js';
import { closeOnSigterm } from './close-on-sigterm.js';

const env = (name: string): string => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
};

@Module({
  imports: [
    TypeOrmModule.forRoot({ type: 'postgres', url: env('DATABASE_URL'), entities: [PartitionApplied], autoLoadEntities: true, synchronize: true, logging: false }),
    SyncModule.forRoot({ service: env('SERVICE'), exchange: env('EXCHANGE'), url: AMQP_URL }),
  ],
  providers: [partitionedHandler(env('CONSUMER'), env('INSTANCE'), Number(env('PARTITIONS')), Number(process.env.HANDLER_MS ?? 0))],
})
class PartitionConsumerModule {}

const app = await NestFactory.createApplicationContext(PartitionConsumerModule, { logger: ['error', 'warn'] });
closeOnSigterm(app);
console.log('READY');
const server = app.get(SyncServer);
let last = '';
setInterval(() => {
  const owned = (server.consumerStatus()[0]?.partitions ?? []).join(',');
  if (owned !== last) console.log(`PARTITIONS ${owned}`);
  last = owned;
}, 50);
