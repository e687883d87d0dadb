/**
 * Scenario (b), publishing: Nest's `ClientRMQ.emit()` to a topic exchange, persistent. Its
 * channel (amqp-connection-manager) uses publisher confirms, and the observable completes on the confirm.
 */
import 'reflect-metadata';
import { Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { type ClientRMQ, ClientsModule, Transport } from '@nestjs/microservices';
import { firstValueFrom } from 'rxjs';
import type { UserEvent } from './runtime/events.js';
import { EVENT_TYPE } from './runtime/protocol.js';
import { servePublisher } from './runtime/roles.js';
import { launch, workerConfig } from './runtime/worker.js';

const config = workerConfig();
const USERS_EVENTS = 'USERS_EVENTS';

@Module({
  imports: [
    ClientsModule.register([
      {
        name: USERS_EVENTS,
        transport: Transport.RMQ,
        options: { urls: [config.amqpUrl], exchange: config.exchange, exchangeType: 'topic', wildcards: true, persistent: true },
      },
    ]),
  ],
})
class PublisherModule {}

async function main(): Promise<void> {
  const app = await NestFactory.createApplicationContext(PublisherModule, { logger: config.logLevels });
  const client = app.get<ClientRMQ>(USERS_EVENTS);
  await client.connect();
  const publishOne = (event: UserEvent) => firstValueFrom(client.emit(EVENT_TYPE, event), { defaultValue: undefined });
  servePublisher(publishOne, () => app.close());
}

launch(main);
