import { SyncKeyOffset } from './entities/sync-key-offset.entity.js';
import { SyncOutboxMessage } from './entities/sync-outbox-message.entity.js';
import { SyncProcessedEvent } from './entities/sync-processed-event.entity.js';
import { CreateSyncProcessedEvents1764115200000 } from './migrations/1764115200000-create-sync-processed-events.js';
import { CreateSyncOutbox1764201600000 } from './migrations/1764201600000-create-sync-outbox.js';
import { CreateSyncKeyOffsets1764288000000 } from './migrations/1764288000000-create-sync-key-offsets.js';

export {
  SyncProcessedEvent,
  SyncOutboxMessage,
  SyncKeyOffset,
  CreateSyncProcessedEvents1764115200000,
  CreateSyncOutbox1764201600000,
  CreateSyncKeyOffsets1764288000000,
};

/** Every entity this library stores; add them to a DataSource's `entities` when not using autoLoadEntities. */
export const SYNC_ENTITIES = [SyncProcessedEvent, SyncOutboxMessage, SyncKeyOffset];

/** Every migration this library ships, in order; add them to a DataSource's `migrations`. */
export const SYNC_MIGRATIONS = [CreateSyncProcessedEvents1764115200000, CreateSyncOutbox1764201600000, CreateSyncKeyOffsets1764288000000];
