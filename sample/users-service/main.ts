import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { AppModule } from './app.module.js';
import { config } from './config.js';

const app = await NestFactory.create(AppModule, { logger: ['log', 'warn', 'error'] });
// On SIGTERM Nest closes the HTTP server, then SyncModule lets pending publishes settle and closes its connections.
app.enableShutdownHooks();
await app.listen(config.port);
new Logger('Bootstrap').log(`users-service ready on http://127.0.0.1:${config.port}`);
