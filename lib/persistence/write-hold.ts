import type { EntityManager } from 'typeorm';
import { dialectOf } from './dialect.js';

interface Socket {
  cork(): void;
  uncork(): void;
}

/**
 * Holds the writes of a transaction's PostgreSQL connection until the next turn of the event
 * loop. pg writes every statement with a system call of its own; the handlers of a parallel
 * batch send theirs within one turn, so held, they leave together in one. Other databases, and
 * a connection that does not expose its socket, are left as they are.
 */
export function holdWritesForOneTurn(manager: EntityManager): void {
  if (dialectOf(manager.connection.options.type) !== 'postgres') return;
  const client = manager.queryRunner as { databaseConnection?: { connection?: { stream?: Partial<Socket> } } } | undefined;
  const socket = client?.databaseConnection?.connection?.stream;
  if (typeof socket?.cork !== 'function' || typeof socket.uncork !== 'function') return;
  socket.cork();
  setImmediate(() => socket.uncork!());
}
