export { SyncModule } from './sync.module.js';
export { SYNC_MODULE_OPTIONS, SYNC_RESOLVED_OPTIONS, type SyncModuleExtras } from './sync.module-definition.js';
export { OnEvent, OnSyncEvent } from './decorators/on-event.decorator.js';
export { PublishesEvent } from './decorators/publishes-event.decorator.js';
export { EventContext } from './consumer/event-context.js';
export type { ConsumerStatus } from './consumer/queue-consumer.js';
export { SyncPublisher } from './publisher/sync.publisher.js';
export { SyncOutbox } from './outbox/sync-outbox.js';
export type { OutboxRelayStatus } from './outbox/outbox.relay.js';
export { SyncClient } from './transport/sync.client.js';
export { SyncServer, SYNC_TRANSPORT } from './transport/sync.server.js';
export { retryQueueName, deadLetterQueueName, partitionQueueName, partitionExchangeName, unkeyedExchangeName, membersQueueName } from './transport/topology.js';
export { keyBucket } from './publisher/envelope.js';
export { SyncMetrics, type SyncCounters } from './sync.metrics.js';
export { HEADER as SYNC_HEADERS, DEFAULT_EXCHANGE, DEFAULT_RETRY } from './sync.constants.js';
export {
  SyncProcessedEvent,
  SyncOutboxMessage,
  SyncKeyOffset,
  CreateSyncProcessedEvents1764115200000,
  CreateSyncOutbox1764201600000,
  CreateSyncKeyOffsets1764288000000,
  SYNC_ENTITIES,
  SYNC_MIGRATIONS,
} from './persistence/index.js';
export { parseDuration, type Duration } from './options/duration.js';
export * from './errors/index.js';
export * from './interfaces/index.js';
