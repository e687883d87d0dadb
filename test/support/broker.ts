import amqp, { type Channel, type ChannelModel, type GetMessage } from 'amqplib';
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
    const channel = await connection.createConfirmChannel();
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
    try {
      return (await probe.checkQueue(queue)).messageCount;
    } finally {
      await probe.close().catch(() => undefined);
    }
  }

  /** Takes every message off a queue (acking them), waiting until at least `atLeast` arrived. */
  async takeAll(queue: string, atLeast = 1, timeoutMs = 15_000): Promise<GetMessage[]> {
    const taken: GetMessage[] = [];
    await waitFor(
      async () => {
        for (let message = await this.channel.get(queue); message; message = await this.channel.get(queue)) {
          this.channel.ack(message);
          taken.push(message);
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
      await channel.deleteQueue(queue).catch(() => undefined);
      await channel.close().catch(() => undefined);
    }
  }

  async deleteExchange(exchange: string): Promise<void> {
    const channel = await this.connection.createChannel();
    await channel.deleteExchange(exchange).catch(() => undefined);
    await channel.close().catch(() => undefined);
  }

  async close(): Promise<void> {
    await this.connection.close().catch(() => undefined);
  }
}
