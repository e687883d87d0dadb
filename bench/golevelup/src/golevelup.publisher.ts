/**
 * Scenario (c), publishing: @golevelup/nestjs-rabbitmq's `AmqpConnection.publish()`, persistent.
 * Its channel (amqp-connection-manager) uses publisher confirms; the promise resolves on the confirm.
 */
import 'reflect-metadata';
import { AmqpConnection, RabbitMQModule } from '@golevelup/nestjs-rabbitmq';
import { Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { UserEvent } from '../../workers/runtime/events.js';
import { EVENT_TYPE } from '../../workers/runtime/protocol.js';
import { servePublisher } from '../../workers/runtime/roles.js';
import { launch, workerConfig } from '../../workers/runtime/worker.js';

const config = workerConfig();

@Module({
  imports: [
    RabbitMQModule.forRoot({
      uri: config.amqpUrl,
      exchanges: [{ name: config.exchange, type: 'topic', options: { durable: true } }],
      connectionInitOptions: { wait: true },
    }),
  ],
})
class PublisherModule {}

async function main(): Promise<void> {
  const app = await NestFactory.createApplicationContext(PublisherModule, { logger: config.logLevels });
  await app.init();
  const amqp = app.get(AmqpConnection);
  const publishOne = (event: UserEvent) => amqp.publish(config.exchange, EVENT_TYPE, event, { persistent: true, contentType: 'application/json' });
  servePublisher(publishOne, () => app.close());
}

launch(main);
