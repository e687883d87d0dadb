/** Scenario (a), publishing: raw amqplib ConfirmChannel, persistent messages, resolved on the broker's confirm. */
import amqp from 'amqplib';
import type { UserEvent } from './runtime/events.js';
import { EVENT_TYPE } from './runtime/protocol.js';
import { servePublisher } from './runtime/roles.js';
import { launch, workerConfig } from './runtime/worker.js';

const config = workerConfig();

async function main(): Promise<void> {
  const connection = await amqp.connect(config.amqpUrl);
  const channel = await connection.createConfirmChannel();
  await channel.assertExchange(config.exchange, 'topic', { durable: true });
  const publishOne = (event: UserEvent) =>
    new Promise<void>((resolve, reject) => {
      const body = Buffer.from(JSON.stringify(event));
      channel.publish(config.exchange, EVENT_TYPE, body, { persistent: true, contentType: 'application/json' }, (error) => (error ? reject(error) : resolve()));
    });
  servePublisher(publishOne, async () => {
    await channel.close();
    await connection.close();
  });
}

launch(main);
