/**
 * Where publish-only throughput goes between raw amqplib (scenario a) and this library (d):
 * `npm run bench:publish -- [rounds] [events]` (defaults 5 and 20,000). In one process, interleaved round by round, each step publishes `events`
 * persistent messages with confirms (at most 1,000 awaiting a confirm) to its own exchange and
 * queue on the local broker:
 *
 * 1. raw amqplib with scenario (a)'s body and properties (persistent, contentType);
 * 2. as 1 with a messageId (a UUID, as the library sends the event id);
 * 3. as 1 with the envelope of the wire contract as the body (eventId, eventType, data,
 *    timestamp, source);
 * 4. raw amqplib with the whole wire contract but its messageId;
 * 5. raw amqplib with the whole wire contract: the envelope, and the AMQP properties DESIGN §3
 *    asks for (messageId, type, appId, timestamp, contentType, mandatory);
 * 6. as 5 without `mandatory` (what reporting unroutable events costs the broker);
 * 7. as 5 through amqp-connection-manager's confirm channel (what the library publishes on);
 * 8. `SyncPublisher.publish(type, data)`;
 * 9. `SyncPublisher.publish(type, data, { key })` (adds the key and its bucket header).
 *
 * Prints events/s per step (median, min–max), each step's ratio to step 1 within a round, and
 * the CPU time per message of this process and of the local broker (from /proc, on Linux).
 */
import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import amqp, { type Options } from 'amqplib';
import { connect as connectManager } from 'amqp-connection-manager';
import { SyncModule, SyncPublisher } from 'nestjs-event-sync';
import { brokerCpuMs } from './harness/cpu.js';
import { burst, type PublishOne } from './workers/runtime/publishing.js';
import type { UserEvent } from './workers/runtime/events.js';

const AMQP_URL = process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const POSTGRES_URL = process.env.POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const EVENT_TYPE = 'BenchUser.Changed';
const WINDOW = 1000;

const rounds = Number(process.argv[2] ?? 5);
const events = Number(process.argv[3] ?? 20_000);
const runId = `bench-publish-${Date.now().toString(36)}`;
const exchange = `${runId}.events`;
const queue = `${runId}.users`;

function contract(event: UserEvent) {
  const envelope = { eventId: randomUUID(), eventType: EVENT_TYPE, data: event, timestamp: new Date().toISOString(), source: runId };
  const properties: Options.Publish = {
    persistent: true,
    mandatory: true,
    contentType: 'application/json',
    messageId: envelope.eventId,
    type: EVENT_TYPE,
    appId: runId,
    timestamp: Math.floor(Date.now() / 1000),
  };
  return { body: Buffer.from(JSON.stringify(envelope)), properties };
}

async function main(): Promise<void> {
  const connection = await amqp.connect(AMQP_URL);
  const channel = await connection.createConfirmChannel();
  await channel.assertExchange(exchange, 'topic', { durable: true });
  await channel.assertQueue(queue, { durable: true });
  await channel.bindQueue(queue, exchange, '#');

  const manager = connectManager([AMQP_URL]);
  const wrapper = manager.createChannel({ confirm: true, json: false, publishTimeout: 30_000 });
  await wrapper.waitForConnect();

  @Module({
    imports: [
      TypeOrmModule.forRoot({ type: 'postgres', url: POSTGRES_URL, synchronize: false, logging: false }),
      // Publishes directly, never through the outbox, so it needs no outbox table.
      SyncModule.forRoot({ service: runId, url: AMQP_URL, exchange, outbox: false }),
    ],
  })
  class PublisherModule {}
  const app = await NestFactory.createApplicationContext(PublisherModule, { logger: ['error', 'warn'] });
  await app.init();
  const publisher = app.get(SyncPublisher);

  const confirmed = (publish: (done: (error: unknown) => void) => void) =>
    new Promise<void>((resolve, reject) => publish((error) => (error ? reject(error) : resolve())));
  const aProperties = { persistent: true, contentType: 'application/json' };
  const steps: Array<[string, PublishOne]> = [
    ['1 raw amqplib, (a) properties', (event) => confirmed((done) => channel.publish(exchange, EVENT_TYPE, Buffer.from(JSON.stringify(event)), aProperties, done))],
    ['2 raw amqplib, (a) properties and a messageId', (event) => confirmed((done) => channel.publish(exchange, EVENT_TYPE, Buffer.from(JSON.stringify(event)), { ...aProperties, messageId: randomUUID() }, done))],
    ['3 raw amqplib, envelope body, (a) properties', (event) => confirmed((done) => channel.publish(exchange, EVENT_TYPE, contract(event).body, aProperties, done))],
    ['4 raw amqplib, wire contract but its messageId', (event) => confirmed((done) => { const { body, properties } = contract(event); channel.publish(exchange, EVENT_TYPE, body, { ...properties, messageId: undefined }, done); })],
    ['5 raw amqplib, wire contract', (event) => confirmed((done) => { const { body, properties } = contract(event); channel.publish(exchange, EVENT_TYPE, body, properties, done); })],
    ['6 raw amqplib, wire contract without mandatory', (event) => confirmed((done) => { const { body, properties } = contract(event); channel.publish(exchange, EVENT_TYPE, body, { ...properties, mandatory: false }, done); })],
    ['7 amqp-connection-manager, wire contract', (event) => { const { body, properties } = contract(event); return wrapper.publish(exchange, EVENT_TYPE, body, properties); }],
    ['8 SyncPublisher.publish', (event) => publisher.publish(EVENT_TYPE, event)],
    ['9 SyncPublisher.publish with a key', (event) => publisher.publish(EVENT_TYPE, event, { key: event.id })],
  ];
  const brokerReadable = brokerCpuMs() !== undefined;
  // Per step, one value per round: events/s, ratio to step 1, CPU µs per message of this process and of the broker.
  const figures = new Map(steps.map(([name]) => [name, { rates: [] as number[], ratios: [] as number[], ownCpu: [] as number[], brokerCpu: [] as number[] }]));
  let seq = 0;
  for (let round = 1; round <= rounds; round++) {
    const order = steps.map((_, i) => steps[(i + round - 1) % steps.length]);
    const thisRound = new Map<string, number>();
    for (const [name, publishOne] of order) {
      await channel.purgeQueue(queue);
      const step = figures.get(name)!;
      const [ownBefore, brokerBefore] = [process.cpuUsage(), brokerCpuMs()];
      const result = await burst(publishOne, { tag: runId, fromSeq: seq, count: events, window: WINDOW });
      const own = process.cpuUsage(ownBefore);
      step.ownCpu.push((own.user + own.system) / events);
      const brokerAfter = brokerCpuMs();
      if (brokerBefore !== undefined && brokerAfter !== undefined) step.brokerCpu.push(((brokerAfter - brokerBefore) * 1000) / events);
      seq += events;
      const rate = events / ((result.lastConfirmAt - result.firstPublishAt) / 1000);
      thisRound.set(name, rate);
      step.rates.push(rate);
    }
    for (const [name] of steps) figures.get(name)!.ratios.push(thisRound.get(name)! / thisRound.get(steps[0][0])!);
    console.log(`round ${round}/${rounds}: ${steps.map(([name]) => `${name.slice(0, 1)}=${Math.round(thisRound.get(name)!)}`).join(' ')}`);
  }

  console.log(`\n${events} events per step, ${rounds} rounds, interleaved\n`);
  console.log(`| step | events/s | ratio to 1 | CPU per message, this process (µs) | the broker (µs) |\n| --- | ---: | ---: | ---: | ---: |`);
  const micros = (x: number) => x.toFixed(0);
  for (const [name, step] of figures) {
    const [rate, ratio] = [spread(step.rates, (x) => Math.round(x).toLocaleString('en-US')), spread(step.ratios, (x) => `${x.toFixed(2)}×`)];
    const brokerText = brokerReadable ? spread(step.brokerCpu, micros) : '–';
    console.log(`| ${name.slice(2)} | ${rate} | ${ratio} | ${spread(step.ownCpu, micros)} | ${brokerText} |`);
  }

  await app.close();
  await wrapper.close();
  await manager.close();
  await channel.deleteQueue(queue);
  await channel.deleteExchange(exchange);
  await connection.close();
}

function spread(values: number[], format: (x: number) => string): string {
  const sorted = [...values].sort((a, b) => a - b);
  const median = sorted.length % 2 ? sorted[(sorted.length - 1) / 2] : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
  return `${format(median)} (${format(sorted[0])}–${format(sorted[sorted.length - 1])})`;
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
