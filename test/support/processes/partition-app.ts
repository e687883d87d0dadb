/**
 * The partitioned consumer of the partition tests, as a module both the test process and a
 * child process (test/support/processes/partition-consumer.ts) build: a handler with
 * `partitions` that appends every application to `test_partition_log`, in commit order.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Injectable } from '@nestjs/common';
import { Column, Entity, PrimaryGeneratedColumn } from 'typeorm';
import { type EventContext, OnEvent, type RetryOptions } from '../../../lib/index.js';

@Entity('test_partition_log')
export class PartitionApplied {
  @PrimaryGeneratedColumn() n!: number;
  @Column({ type: 'varchar', length: 200 }) consumer!: string;
  @Column({ type: 'varchar', length: 100 }) instance!: string;
  @Column({ name: 'event_key', type: 'varchar', length: 200 }) key!: string;
  @Column({ type: 'int' }) sequence!: number;
  @Column({ type: 'int' }) attempt!: number;
}

export interface PartitionEvent {
  key: string;
  sequence: number;
  /** Fail this many first runs (retried in place). */
  failures?: number;
}

export const PARTITION_EVENT = 'Partitioned.Changed';

/** A handler class for one consumer name, instance label and partition count. */
export function partitionedHandler(consumer: string, instance: string, partitions: number, handlerMs = 0, retry: RetryOptions = { attempts: 3, delays: ['20ms'] }) {
  @Injectable()
  class PartitionedProjection {
    @OnEvent(PARTITION_EVENT, { consumer, partitions, retry })
    async onChanged(data: PartitionEvent, ctx: EventContext) {
      if (handlerMs > 0) await sleep(handlerMs);
      await ctx.manager.insert(PartitionApplied, { consumer, instance, key: data.key, sequence: data.sequence, attempt: ctx.attempt });
      if (ctx.attempt <= (data.failures ?? 0)) throw new Error(`${data.key}#${data.sequence} fails on attempt ${ctx.attempt}`);
    }
  }
  return PartitionedProjection;
}
