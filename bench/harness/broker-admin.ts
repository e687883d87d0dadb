import amqp, { type ChannelModel } from 'amqplib';

export interface QueueState {
  messages: number;
  consumers: number;
}

/**
 * The harness's own connection: declares the hand-made retry tiers, watches queues, cleans up.
 * It reconnects on demand, so a broker restarted under the run (by another suite) does not
 * leave the run's queues behind.
 */
export class BrokerAdmin {
  private connection?: ChannelModel;
  private version = 'RabbitMQ ?';
  /** Times the broker closed this connection: a restart (another suite's broker-restart tests) disturbs whatever ran then. */
  disconnects = 0;

  private constructor(private readonly url: string) {}

  static async connect(url: string): Promise<BrokerAdmin> {
    const admin = new BrokerAdmin(url);
    await admin.open();
    return admin;
  }

  /** e.g. "RabbitMQ 3.10.8", as the broker announced itself. */
  get serverVersion(): string {
    return this.version;
  }

  /** Waits (bounded) until the broker accepts a connection. */
  async waitUntilReachable(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        await this.open();
        return;
      } catch (error) {
        if (Date.now() > deadline) throw new Error(`RabbitMQ at ${this.url.replace(/\/\/[^@]*@/, '//')} is not reachable (${(error as Error).message})`);
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    }
  }

  /** Scenarios a–c: a TTL queue that sends what was dead-lettered into it back to `queue`. */
  async declareRetryTier(queue: string, retryQueue: string, delayMs: number): Promise<void> {
    await this.withChannel((channel) =>
      channel.assertQueue(retryQueue, { durable: true, arguments: { 'x-message-ttl': delayMs, 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': queue } }),
    );
  }

  /** undefined when the queue (or one of the queues, summed) does not exist; throws when the broker cannot be asked. */
  async state(queue: string | string[]): Promise<QueueState | undefined> {
    if (Array.isArray(queue)) {
      const states = await Promise.all(queue.map((one) => this.state(one)));
      if (states.some((state) => state === undefined)) return undefined;
      return states.reduce<QueueState>((sum, state) => ({ messages: sum.messages + state!.messages, consumers: sum.consumers + state!.consumers }), { messages: 0, consumers: 0 });
    }
    try {
      const { messageCount, consumerCount } = await this.withChannel((channel) => channel.checkQueue(queue));
      return { messages: messageCount, consumers: consumerCount };
    } catch (error) {
      if ((error as { code?: number }).code === 404) return undefined;
      throw error;
    }
  }

  /** Polls (every 50 ms, bounded) until the queue's state satisfies `done`. */
  async waitFor(queue: string | string[], what: string, done: (state: QueueState) => boolean, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last: string = 'not asked yet';
    for (;;) {
      try {
        const state = await this.state(queue);
        if (state && done(state)) return;
        last = state ? JSON.stringify(state) : 'no such queue';
      } catch (error) {
        last = `broker error: ${(error as Error).message}`;
      }
      if (Date.now() > deadline) throw new Error(`${queue}: ${what} not reached within ${timeoutMs} ms (last: ${last})`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  async purge(queue: string): Promise<void> {
    await this.withChannel((channel) => channel.purgeQueue(queue)).catch(() => undefined);
  }

  async deleteQueue(queue: string): Promise<void> {
    await this.withChannel((channel) => channel.deleteQueue(queue)).catch(() => undefined);
  }

  async deleteExchange(exchange: string): Promise<void> {
    await this.withChannel((channel) => channel.deleteExchange(exchange)).catch(() => undefined);
  }

  async close(): Promise<void> {
    const connection = this.connection;
    this.connection = undefined;
    await connection?.close().catch(() => undefined);
  }

  private async open(): Promise<ChannelModel> {
    if (this.connection) return this.connection;
    const connection = await amqp.connect(this.url);
    connection.on('error', () => undefined);
    connection.on('close', () => {
      if (this.connection !== connection) return;
      this.connection = undefined;
      this.disconnects += 1;
    });
    const properties = (connection.connection as unknown as { serverProperties?: Record<string, unknown> }).serverProperties ?? {};
    this.version = `${String(properties.product ?? 'RabbitMQ')} ${String(properties.version ?? '?')}`;
    this.connection = connection;
    return connection;
  }

  /** A channel per operation: a failed check closes its channel, never the connection. */
  private async withChannel<T>(work: (channel: amqp.Channel) => Promise<T>): Promise<T> {
    const channel = await (await this.open()).createChannel();
    channel.on('error', () => undefined);
    try {
      return await work(channel);
    } finally {
      await channel.close().catch(() => undefined);
    }
  }
}
