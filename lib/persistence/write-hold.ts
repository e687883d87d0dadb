import type { EntityManager } from 'typeorm';
import { dialectOf } from './dialect.js';

interface Socket {
  cork(): void;
  uncork(): void;
}

/** The part of a pg `Client` used here. */
export interface PipelinedClient {
  pipeline?: boolean;
  connection?: { stream?: Partial<Socket> };
  query(text: string): Promise<unknown>;
}

/**
 * The pg client under a transaction's manager if it is in pipeline mode: it queues every
 * statement in the order it is called and sends it without waiting for the ones before.
 * Undefined for other databases and for connections not in pipeline mode.
 */
export function pipelinedClient(manager: EntityManager): PipelinedClient | undefined {
  if (dialectOf(manager.connection.options.type) !== 'postgres') return undefined;
  const client = (manager.queryRunner as { databaseConnection?: PipelinedClient } | undefined)?.databaseConnection;
  return client?.pipeline === true && typeof client.query === 'function' ? client : undefined;
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
  holdClientWritesForOneTurn(pipelinedClient(manager));
}

/** `holdWritesForOneTurn` for a client already looked up with `pipelinedClient`. */
export function holdClientWritesForOneTurn(client: PipelinedClient | undefined): void {
  const socket = client?.connection?.stream;
  if (typeof socket?.cork !== 'function' || typeof socket.uncork !== 'function') return;
  socket.cork();
  setImmediate(() => socket.uncork!());
}
