import amqp, { type Channel, type ChannelModel, type GetMessage } from 'amqplib';
import { deadLetterQueueName } from '../../lib/index.js';
import { AMQP_URL } from './env.js';
import { waitFor } from './wait.js';

/** A raw amqplib connection for what a test does behind the library's back. */
export class Broker {
  private constructor(
    readonly connection: ChannelModel,
    readonly channel: Channel,
  ) {}

  static async connect(url = AMQP_URL): Promise<Broker> {
    const connection = await amqp.connect(url);
    // A test connection may see the broker restarted: an unhandled 'error' event would end the run.
    connection.on('error', () => undefined);
    const channel = await connection.createConfirmChannel();
    channel.on('error', () => undefined);
    return new Broker(connection, channel);
  }

  /** Publishes raw bytes with confirms, like a foreign producer would. */
  async publishRaw(exchange: string, routingKey: string, body: string | Buffer, options: amqp.Options.Publish = {}): Promise<void> {
    const channel = this.channel as amqp.ConfirmChannel;
    await new Promise<void>((resolve, reject) =>
      channel.publish(exchange, routingKey, Buffer.isBuffer(body) ? body : Buffer.from(body), { persistent: true, ...options }, (error) => (error ? reject(error) : resolve())),
    );
  }

  async messageCount(queue: string): Promise<number> {
    const probe = await this.connection.createChannel();
    probe.on('error', () => undefined);
    try {
      return (await probe.checkQueue(queue)).messageCount;
    } finally {
      await probe.close().catch(() => undefined);
    }
  }

  /** Takes every message off a queue (acking them), waiting until at least `atLeast` arrived (and the queue exists). */
  async takeAll(queue: string, atLeast = 1, timeoutMs = 15_000): Promise<GetMessage[]> {
    const taken: GetMessage[] = [];
    await waitFor(
      async () => {
        const channel = await this.connection.createChannel();
        channel.on('error', () => undefined);
        try {
          for (let message = await channel.get(queue); message; message = await channel.get(queue)) {
            channel.ack(message);
            taken.push(message);
          }
        } finally {
          await channel.close().catch(() => undefined);
        }
        return taken.length >= atLeast;
      },
      { timeoutMs, what: `${atLeast} message(s) on ${queue}` },
    );
    return taken;
  }

  async deleteQueues(...queues: string[]): Promise<void> {
    for (const queue of queues) {
      const channel = await this.connection.createChannel();
      channel.on('error', () => undefined);
      await channel.deleteQueue(queue).catch(() => undefined);
      await channel.close().catch(() => undefined);
    }
  }

  async deleteExchange(exchange: string): Promise<void> {
    const channel = await this.connection.createChannel();
    channel.on('error', () => undefined);
    await channel.deleteExchange(exchange).catch(() => undefined);
    await channel.close().catch(() => undefined);
  }

  async close(): Promise<void> {
    await this.connection.close().catch(() => undefined);
  }
}

/** Messages left on a handler queue and on its DLQ, as a fresh connection sees them. */
export async function leftOnQueues(queue: string): Promise<{ queue: number; dlq: number }> {
  const broker = await Broker.connect();
  try {
    return { queue: await broker.messageCount(queue), dlq: await broker.messageCount(deadLetterQueueName(queue)) };
  } finally {
    await broker.close();
  }
}
