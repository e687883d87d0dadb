import { DataSource, type EntityManager } from 'typeorm';
import { holdWritesForOneTurn } from '../../lib/persistence/write-hold.js';
import { typeOrmOptions } from '../support/databases.js';

interface CountedSocket {
  writableCorked: number;
  _write: (...args: unknown[]) => unknown;
  _writev: (...args: unknown[]) => unknown;
}

/** The socket under the transaction's pg connection, with its writes to the kernel counted. */
function countWrites(manager: EntityManager): { socket: CountedSocket; writes: () => number; restore: () => void } {
  const socket = (manager.queryRunner as unknown as { databaseConnection: { connection: { stream: CountedSocket } } }).databaseConnection.connection.stream;
  let writes = 0;
  const { _write: write, _writev: writev } = socket;
  socket._write = function (this: unknown, ...args: unknown[]) {
    writes += 1;
    return write.apply(this, args);
  };
  socket._writev = function (this: unknown, ...args: unknown[]) {
    writes += 1;
    return writev.apply(this, args);
  };
  return { socket, writes: () => writes, restore: () => Object.assign(socket, { _write: write, _writev: writev }) };
}

describe('holding the writes of a pipelined PostgreSQL connection for one turn', () => {
  let dataSource: DataSource;

  beforeAll(async () => {
    const { autoLoadEntities: _unused, ...options } = typeOrmOptions('postgres', [], { pipeline: true }).options as Record<string, unknown>;
    dataSource = await new DataSource(options as never).initialize();
  });

  afterAll(() => dataSource.destroy());

  const statements = (manager: EntityManager) => Promise.all([1, 2, 3, 4, 5].map(async (n) => (await manager.query('SELECT $1::int AS n', [n]))[0].n));

  it('sends the statements started in one turn in one write, answers each, and leaves the socket uncorked', async () => {
    const { held, writes, corked } = await dataSource.transaction(async (manager) => {
      const counter = countWrites(manager);
      try {
        holdWritesForOneTurn(manager);
        const held = await statements(manager);
        return { held, writes: counter.writes(), corked: counter.socket.writableCorked };
      } finally {
        counter.restore();
      }
    });
    expect(held).toEqual([1, 2, 3, 4, 5]);
    expect(writes).toBe(1);
    expect(corked).toBe(0);
  });

  it('without the hold, pg writes each statement on its own (what the hold saves)', async () => {
    const writes = await dataSource.transaction(async (manager) => {
      const counter = countWrites(manager);
      try {
        expect(await statements(manager)).toEqual([1, 2, 3, 4, 5]);
        return counter.writes();
      } finally {
        counter.restore();
      }
    });
    expect(writes).toBe(5);
  });

  it('leaves a connection that is not in pipeline mode as it is (it sends a statement only after the one before came back)', async () => {
    const { autoLoadEntities: _unused, ...options } = typeOrmOptions('postgres', []).options as Record<string, unknown>;
    const plain = await new DataSource(options as never).initialize();
    try {
      const { answers, corked } = await plain.transaction(async (manager) => {
        const counter = countWrites(manager);
        try {
          holdWritesForOneTurn(manager);
          const corked = counter.socket.writableCorked;
          return { answers: await statements(manager), corked };
        } finally {
          counter.restore();
        }
      });
      expect(corked).toBe(0);
      expect(answers).toEqual([1, 2, 3, 4, 5]);
    } finally {
      await plain.destroy();
    }
  });

  it('leaves another database (SQLite) as it is', async () => {
    const { options, cleanup } = typeOrmOptions('sqlite', []);
    const { autoLoadEntities: _unused, ...sqliteOptions } = options as Record<string, unknown>;
    const sqlite = await new DataSource(sqliteOptions as never).initialize();
    try {
      const answer = await sqlite.transaction(async (manager) => {
        holdWritesForOneTurn(manager);
        return manager.query('SELECT 7 AS n');
      });
      expect(answer).toEqual([{ n: 7 }]);
    } finally {
      await sqlite.destroy();
      cleanup();
    }
  });
});
