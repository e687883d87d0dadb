import type { EntityManager } from 'typeorm';
import { dialectOf } from './dialect.js';

interface Socket {
  cork(): void;
  uncork(): void;
}

interface PgClient {
  pipeline?: boolean;
  connection?: { stream?: Partial<Socket> };
}

/**
 * Holds the writes of a transaction's pipelined PostgreSQL connection until the next turn of
 * the event loop. pg writes every statement with a system call of its own; statements issued
 * within one turn (the handlers of a parallel batch, a savepoint and the handler's first
 * statement) then leave together in one. A connection that is not in pipeline mode sends a
 * statement only after the one before has come back, so holding would only delay it: it is
 * left as it is, as are other databases and a connection that does not expose its socket.
 */
export function holdWritesForOneTurn(manager: EntityManager): void {
  if (dialectOf(manager.connection.options.type) !== 'postgres') return;
  const client = (manager.queryRunner as { databaseConnection?: PgClient } | undefined)?.databaseConnection;
  const socket = client?.connection?.stream;
  if (client?.pipeline !== true || typeof socket?.cork !== 'function' || typeof socket.uncork !== 'function') return;
  socket.cork();
  setImmediate(() => socket.uncork!());
}
