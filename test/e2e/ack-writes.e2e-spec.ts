import amqp, { type ChannelModel, type ConfirmChannel, type ConsumeMessage } from 'amqplib';
import { Settler } from '../../lib/consumer/settler.js';
import { AMQP_URL } from '../support/env.js';
import { unique, waitFor } from '../support/wait.js';

interface CountedSocket {
  writableCorked: number;
  _write: (...args: unknown[]) => unknown;
  _writev: (...args: unknown[]) => unknown;
}

/** The socket under the channel's connection, with its writes to the kernel counted. */
function countWrites(channel: ConfirmChannel): { socket: CountedSocket; writes: () => number; restore: () => void } {
  const socket = (channel as unknown as { connection: { stream: CountedSocket } }).connection.stream;
  let writes = 0;
  const { _write: write, _writev: writev } = socket;
  socket._write = function (this: unknown, ...args: unknown[]) {
    writes += 1;
    return write.apply(this, args);
  };
  socket._writev = function (this: unknown, ...args: unknown[]) {
    writes += 1;
    return writev.apply(this, args);
  };
  return { socket, writes: () => writes, restore: () => Object.assign(socket, { _write: write, _writev: writev }) };
}

const COUNT = 10;

/**
 * amqplib writes every frame with a system call of its own; the settler holds the connection's
 * socket so that the acks of one turn (several batches committing at once) leave in one write.
 */
describe('the acks of one turn, against RabbitMQ', () => {
  let connection: ChannelModel;
  let channel: ConfirmChannel;
  let queue: string;
  let received: ConsumeMessage[];

  beforeEach(async () => {
    connection = await amqp.connect(AMQP_URL);
    connection.on('error', () => undefined);
    channel = await connection.createConfirmChannel();
    channel.on('error', () => undefined);
    queue = unique('ack-writes');
    await channel.assertQueue(queue, { durable: false });
    for (let n = 0; n < COUNT; n++) channel.sendToQueue(queue, Buffer.from(String(n)));
    await channel.waitForConfirms();
    received = [];
  });

  afterEach(async () => {
    const cleaner = await connection.createChannel();
    await cleaner.deleteQueue(queue);
    await connection.close().catch(() => undefined);
  });

  /** Consumes the queue's messages unacked, each reported to `onDelivery` as it arrives. */
  async function consumeAll(onDelivery: (message: ConsumeMessage) => void = () => undefined): Promise<void> {
    await channel.prefetch(COUNT);
    await channel.consume(queue, (message) => {
      if (!message) return;
      onDelivery(message);
      received.push(message);
    });
    await waitFor(() => received.length === COUNT, { what: `${COUNT} deliveries` });
  }

  /** What the broker holds of the queue once the channel is closed: unacked messages come back. */
  async function leftAfterClose(): Promise<number> {
    await channel.close();
    const probe = await connection.createChannel();
    try {
      return (await probe.checkQueue(queue)).messageCount;
    } finally {
      await probe.close();
    }
  }

  it('sends single acks, multiple acks and requeues of one turn in one write, and the broker takes each', async () => {
    const settler = new Settler();
    const tracker = settler.track(channel);
    await consumeAll((message) => tracker.delivered(message.fields.deliveryTag));
    const counter = countWrites(channel);
    try {
      // Deliveries 1–10 settle in one turn: 2, 4 and 6 commit first (single acks: 1 still runs),
      // then 1, 3 and 5 (one multiple ack up to 5), 10 is requeued and 8 acked alone.
      const tag = (n: number) => received.find((message) => message.fields.deliveryTag === n)!;
      settler.ackAll(channel, [2, 4, 6].map(tag));
      settler.ackAll(channel, [1, 3, 5].map(tag));
      settler.requeue(channel, tag(10));
      settler.ack(channel, tag(8));
      expect(counter.writes()).toBe(0);
      await waitFor(() => counter.writes() > 0 && counter.socket.writableCorked === 0, { what: 'the held frames to be written' });
      expect(counter.writes()).toBe(1);
    } finally {
      counter.restore();
    }
    // Never settled: 7 and 9; requeued: 10. The rest were acked.
    expect(await leftAfterClose()).toBe(3);
  });

  it('without the hold, amqplib writes each ack on its own (what the hold saves)', async () => {
    await consumeAll();
    const counter = countWrites(channel);
    try {
      for (const message of received) channel.ack(message);
      await waitFor(() => counter.writes() === COUNT, { what: 'every ack to be written' });
      expect(counter.writes()).toBe(COUNT);
    } finally {
      counter.restore();
    }
    expect(await leftAfterClose()).toBe(0);
  });
});
