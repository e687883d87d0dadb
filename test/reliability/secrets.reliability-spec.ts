/**
 * Passwords never reach the logs. A RabbitMQ user and a PostgreSQL role of their own, with
 * passwords full of URL-special characters, both carried in the URLs the service is given; then
 * every path that logs a connection: startup, publish, consume, a failing handler that retries
 * and dead-letters, a broker outage and the reconnection, a startup against closed ports, a
 * login refused for a wrong password, a graceful close. Everything written meanwhile is captured:
 * the Nest logger's calls, process.stdout / stderr, console, and the errors thrown to the caller
 * (what an application prints when its bootstrap fails). No line may hold a password, raw or
 * URL-encoded.
 */
import { execFile } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { createServer } from 'node:net';
import { inspect, promisify } from 'node:util';
import { ConsoleLogger, Injectable, type INestApplicationContext, Logger, type Provider } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { TypeOrmModule } from '@nestjs/typeorm';
import { Column, DataSource, Entity, PrimaryGeneratedColumn } from 'typeorm';
import {
  deadLetterQueueName,
  EventContext,
  OnEvent,
  retryQueueName,
  SYNC_HEADERS,
  SyncMetrics,
  SyncModule,
  type SyncModuleOptions,
  SyncPublisher,
  SyncServer,
} from '../../lib/index.js';
import { Broker } from '../support/broker.js';
import { startBroker, stopBroker } from '../support/broker-control.js';
import { AMQP_URL, POSTGRES_URL } from '../support/env.js';
import { unique, waitFor } from '../support/wait.js';

const run = promisify(execFile);

@Entity('test_secret_runs')
class SecretRun {
  @PrimaryGeneratedColumn() id!: number;
  @Column({ name: 'event_id', type: 'varchar', length: 200 }) eventId!: string;
}

/** One written line and where it came from: a logger context, a stream, console, or an error thrown to the caller. */
interface CapturedLine {
  source: string;
  text: string;
}

const SPECIALS = "#!%@:/?&=+$'\"\\^~*()[]{}|;,<>`";
/** What survives Debian's rabbitmqctl wrapper, which re-reads its arguments inside a double-quoted `sh -c`. */
const RABBITMQCTL_SPECIALS = SPECIALS.replace(/[$`\\]/g, '');

/** A password of URL-special characters (no whitespace, no leading dash, ASCII as amqplib's URL decoding expects). */
function password(prefix: string, specials = SPECIALS): string {
  const tail = Array.from({ length: 16 }, (_, i) => (i % 2 ? specials[randomInt(specials.length)] : randomBytes(1).toString('hex')[0])).join('');
  return `${prefix}${tail}`;
}

/**
 * Records everything written while it runs. The Nest logger records each call with all its
 * arguments (an error's stack and cause included) before printing it, and the printing itself is
 * caught on process.stdout / stderr together with anything else written there.
 */
class LogCapture {
  readonly lines: CapturedLine[] = [];
  readonly logger = new RecordingLogger(this);
  private readonly restore: Array<() => void> = [];

  start(): void {
    for (const name of ['stdout', 'stderr'] as const) {
      const stream = process[name];
      const write = stream.write;
      stream.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
        this.add(`process.${name}`, typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
        if (process.env.SYNC_TEST_LOGS) return (write as (...args: unknown[]) => boolean).call(stream, chunk, ...rest);
        const callback = rest.find((arg): arg is () => void => typeof arg === 'function');
        callback?.();
        return true;
      }) as typeof stream.write;
      this.restore.push(() => (stream.write = write));
    }
    for (const level of ['log', 'info', 'warn', 'error', 'debug', 'trace'] as const) {
      const original = console[level];
      console[level] = (...args: unknown[]) => {
        this.add(`console.${level}`, args.map((arg) => (typeof arg === 'string' ? arg : inspect(arg, { depth: 6 }))).join(' '));
        if (process.env.SYNC_TEST_LOGS) original.apply(console, args);
      };
      this.restore.push(() => (console[level] = original));
    }
    Logger.overrideLogger(this.logger);
  }

  stop(): void {
    for (const undo of this.restore.splice(0).reverse()) undo();
  }

  add(source: string, text: string): void {
    for (const line of text.split('\n')) if (line.trim() !== '') this.lines.push({ source, text: line });
  }

  /** What an application would print for an error that reaches it (bootstrap, publish). */
  thrown(what: string, error: unknown): void {
    this.add(`thrown by ${what}`, inspect(error, { depth: 6 }));
  }

  get text(): string {
    return this.lines.map((line) => line.text).join('\n');
  }
}

class RecordingLogger extends ConsoleLogger {
  constructor(private readonly capture: LogCapture) {
    super({ logLevels: ['fatal', 'error', 'warn', 'log', 'debug', 'verbose'], colors: false });
  }

  private record(level: string, message: unknown, params: unknown[]): void {
    const context = typeof params[params.length - 1] === 'string' ? (params[params.length - 1] as string) : (this.context ?? 'Nest');
    const text = [message, ...params].map((part) => (typeof part === 'string' ? part : inspect(part, { depth: 6 }))).join(' ');
    this.capture.add(`logger ${level} [${context}]`, text);
  }

  override log(message: unknown, ...params: unknown[]) {
    this.record('log', message, params);
    super.log(message, ...params);
  }

  override error(message: unknown, ...params: unknown[]) {
    this.record('error', message, params);
    super.error(message, ...params);
  }

  override warn(message: unknown, ...params: unknown[]) {
    this.record('warn', message, params);
    super.warn(message, ...params);
  }

  override debug(message: unknown, ...params: unknown[]) {
    this.record('debug', message, params);
    super.debug(message, ...params);
  }

  override verbose(message: unknown, ...params: unknown[]) {
    this.record('verbose', message, params);
    super.verbose(message, ...params);
  }

  override fatal(message: unknown, ...params: unknown[]) {
    this.record('fatal', message, params);
    super.fatal(message, ...params);
  }
}

/** A TCP port nothing listens on: bound once by us, then released. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function withPort(url: string, port: number): string {
  const parsed = new URL(url);
  parsed.port = String(port);
  return parsed.toString();
}

async function rabbitmqctl(...args: string[]): Promise<void> {
  await run('rabbitmqctl', args, { timeout: 60_000 });
}

describe('credentials in the broker and database URLs never reach the logs', () => {
  const capture = new LogCapture();
  const runId = unique('secret').replace(/-/g, '_');
  const user = `${runId}_user`;
  const role = `${runId}_role`;
  const schema = `${runId}_schema`;
  const amqpPassword = password('S3cr#t!%', RABBITMQCTL_SPECIALS);
  const wrongPassword = password('Wr0ng#!%');
  const pgPassword = password('P9s#w!%');
  const broker = new URL(AMQP_URL);
  const amqpUrl = `amqp://${user}:${encodeURIComponent(amqpPassword)}@${broker.hostname}:${broker.port || 5672}`;
  const wrongPasswordUrl = `amqp://${user}:${encodeURIComponent(wrongPassword)}@${broker.hostname}:${broker.port || 5672}`;
  const database = new URL(POSTGRES_URL);
  const postgresUrl = `postgres://${role}:${encodeURIComponent(pgPassword)}@${database.hostname}:${database.port || 5432}${database.pathname}`;
  const maskedAmqpUrl = `amqp://${user}:***@${broker.hostname}:${broker.port || 5672}`;
  const service = unique('secret-svc');
  const exchange = unique('secret-ex');
  const saved = unique('Secret.onSaved');
  const refused = unique('Secret.onRefused');
  const retryDelay = 50;
  const apps: INestApplicationContext[] = [];
  const admin = new DataSource({ type: 'postgres', url: POSTGRES_URL });

  @Injectable()
  class Secrets {
    @OnEvent('Secret.Saved', { consumer: saved })
    async onSaved(_data: unknown, ctx: EventContext) {
      await ctx.manager.insert(SecretRun, { eventId: ctx.eventId });
    }

    @OnEvent('Secret.Refused', { consumer: refused })
    async onRefused(_data: unknown, ctx: EventContext) {
      throw new Error(`refusing ${ctx.eventId}`);
    }
  }

  /** A service on the given URLs, logging everything through the capture; a failed bootstrap is closed before it rethrows. */
  async function boot(options: { amqpUrl: string; postgresUrl?: string; providers?: Provider[]; sync?: Partial<SyncModuleOptions>; service?: string }): Promise<INestApplicationContext> {
    const moduleRef = await Test.createTestingModule({
      imports: [
        TypeOrmModule.forRoot({
          type: 'postgres',
          url: options.postgresUrl ?? postgresUrl,
          entities: [SecretRun],
          autoLoadEntities: true,
          synchronize: true,
          logging: false,
          retryAttempts: 1,
          retryDelay: 100,
        }),
        SyncModule.forRoot({ service: options.service ?? service, exchange, url: options.amqpUrl, reconnectDelay: '200ms', retry: { attempts: 2, delays: [retryDelay] }, ...options.sync }),
      ],
      providers: options.providers ?? [],
    })
      .setLogger(capture.logger)
      .compile();
    moduleRef.useLogger(capture.logger);
    try {
      const app = await moduleRef.init();
      apps.push(app);
      return app;
    } catch (error) {
      await moduleRef.close().catch(() => undefined);
      throw error;
    }
  }

  beforeAll(async () => {
    await rabbitmqctl('add_user', user, amqpPassword);
    await rabbitmqctl('set_permissions', '-p', '/', user, '.*', '.*', '.*');
    await admin.initialize();
    // A literal, as CREATE ROLE takes no parameters (standard_conforming_strings: only quotes need doubling).
    await admin.query(`CREATE ROLE "${role}" LOGIN PASSWORD '${pgPassword.replace(/'/g, "''")}'`);
    await admin.query(`CREATE SCHEMA "${schema}" AUTHORIZATION "${role}"`);
    await admin.query(`ALTER ROLE "${role}" SET search_path = "${schema}"`);
    capture.start();
  });

  afterAll(async () => {
    capture.stop();
    for (const app of apps.splice(0)) await app.close().catch(() => undefined);
    // Whatever happened above, the shared broker runs again before its user is removed.
    await startBroker();
    await rabbitmqctl('delete_user', user).catch(() => undefined);
    const cleanup = await Broker.connect();
    for (const consumer of [saved, refused]) {
      const queue = `${service}.${consumer}`;
      await cleanup.deleteQueues(queue, deadLetterQueueName(queue), retryQueueName(queue, retryDelay));
    }
    await cleanup.deleteExchange(exchange);
    await cleanup.close();
    if (!admin.isInitialized) return;
    await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1', [role]);
    await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await admin.query(`DROP ROLE IF EXISTS "${role}"`);
    await admin.destroy();
  }, 180_000);

  it('serves events on the credentialed URLs through publish, retries, a dead letter, a broker outage and a graceful close', async () => {
    const app = await boot({ amqpUrl, providers: [Secrets] });
    const publisher = app.get(SyncPublisher);
    const metrics = app.get(SyncMetrics);
    const rows = app.get(DataSource).getRepository(SecretRun);
    // The role really is the one connected, in its own schema.
    expect(await app.get(DataSource).query('SELECT current_user AS name, current_schema() AS schema')).toEqual([{ name: role, schema }]);

    const first = await publisher.publish('Secret.Saved', { n: 1 });
    const poison = await publisher.publish('Secret.Refused', { n: 2 });
    await waitFor(async () => (await rows.countBy({ eventId: first.eventId })) === 1, { what: 'the first event handled' });
    const dead = await Broker.connect();
    try {
      const [letter, ...more] = await dead.takeAll(deadLetterQueueName(`${service}.${refused}`), 1);
      expect(more).toHaveLength(0);
      expect(letter.properties.messageId).toBe(poison.eventId);
      expect(letter.properties.headers).toMatchObject({ [SYNC_HEADERS.reason]: 'exhausted', [SYNC_HEADERS.attempts]: 2 });
    } finally {
      await dead.close();
    }
    expect(metrics.snapshot(refused)).toMatchObject({ retried: 1, deadLettered: 1 });

    // Outage: the broker stops, the service logs that it cannot reach it (by its masked URL), then recovers.
    const server = app.get(SyncServer);
    const reconnecting = capture.lines.length;
    try {
      await stopBroker();
      await waitFor(() => capture.lines.slice(reconnecting).some((line) => line.text.includes(`Cannot reach RabbitMQ at ${maskedAmqpUrl}`)), {
        timeoutMs: 30_000,
        what: 'the reconnection attempts logged',
      });
      await waitFor(() => server.consumerStatus().every((status) => status.state === 'recovering'), { what: 'every handler recovering' });
    } finally {
      await startBroker();
    }
    await waitFor(() => server.consumerStatus().every((status) => status.state === 'consuming'), { timeoutMs: 60_000, what: 'every handler consuming again' });
    const second = await publisher.publish('Secret.Saved', { n: 3 });
    await waitFor(async () => (await rows.countBy({ eventId: second.eventId })) === 1, { timeoutMs: 30_000, what: 'an event handled after the outage' });

    apps.splice(apps.indexOf(app), 1);
    await app.close();
    expect(server.consumerStatus().every((status) => status.state === 'stopped')).toBe(true);
  });

  it('logs a startup against a closed broker port and a closed database port', async () => {
    const brokerPort = await closedPort();
    const unreachable = withPort(amqpUrl, brokerPort);
    const bootstrap = boot({ amqpUrl: unreachable, providers: [Secrets], service: unique('secret-unreachable'), sync: { startupTimeout: '1s' } });
    await expect(bootstrap).rejects.toMatchObject({ name: 'BrokerUnavailableError' });
    await bootstrap.catch((error: unknown) => capture.thrown('a bootstrap against a closed broker port', error));
    const maskedUnreachable = `amqp://${user}:***@${broker.hostname}:${brokerPort}`;
    expect(capture.lines.some((line) => line.source.startsWith('logger') && line.text.toLowerCase().includes(`cannot reach rabbitmq at ${maskedUnreachable}`))).toBe(true);

    const databasePort = await closedPort();
    const noDatabase = boot({ amqpUrl, postgresUrl: withPort(postgresUrl, databasePort), service: unique('secret-nodb') });
    await expect(noDatabase).rejects.toThrow(/ECONNREFUSED/);
    await noDatabase.catch((error: unknown) => capture.thrown('a bootstrap against a closed database port', error));
    expect(capture.lines.some((line) => line.source.includes('[TypeOrmModule]') && /Unable to connect to the database/.test(line.text))).toBe(true);
  });

  it('logs a login refused for a wrong password', async () => {
    const bootstrap = boot({ amqpUrl: wrongPasswordUrl, providers: [Secrets], service: unique('secret-refused'), sync: { startupTimeout: '5s' } });
    // With startupTimeout the error is the BrokerUnavailableError of the startup check; the refusal is its cause.
    await expect(bootstrap).rejects.toMatchObject({ cause: expect.objectContaining({ message: expect.stringMatching(/ACCESS.REFUSED/) }) });
    await bootstrap.catch((error: unknown) => capture.thrown('a bootstrap with a wrong password', error));
    const refusal = `cannot reach rabbitmq at ${maskedAmqpUrl}`;
    expect(capture.lines.some((line) => line.source.startsWith('logger') && line.text.toLowerCase().includes(refusal) && /ACCESS.REFUSED/.test(line.text))).toBe(true);
  });

  it('never writes a password, raw or URL-encoded, in any captured line', () => {
    const secrets = [amqpPassword, wrongPassword, pgPassword].flatMap((secret) => {
      const inUrl = new URL(`amqp://u:${encodeURIComponent(secret)}@h`).password;
      return [...new Set([secret, encodeURIComponent(secret), inUrl])].map((form) => ({ secret, form }));
    });
    expect(capture.lines.length).toBeGreaterThan(20);
    expect(capture.text).toContain(maskedAmqpUrl);
    expect(capture.lines.some((line) => line.source.startsWith('process.'))).toBe(true);

    const leaks = capture.lines.flatMap((line) =>
      secrets.filter(({ form }) => line.text.includes(form)).map(({ secret, form }) => `${line.source}: ${line.text} (holds ${form === secret ? 'the password' : `its encoded form ${form}`})`),
    );
    expect(leaks).toEqual([]);
  });

  it('keeps a password out of the logs when it was pasted into the URL without URL-encoding', async () => {
    // Digits, then `#`: the URL still parses (as host `<user>`, port <digits>, and a fragment), so a
    // plain URL check would let it through and log it. The options check refuses it without repeating it.
    const pasted = `${randomInt(1_000, 65_535)}#${password('S3cr!%', "!%&=+;,*()~^|{}[]:/?@'")}`;
    const from = capture.lines.length;
    const bootstrap = boot({ amqpUrl: `amqp://${user}:${pasted}@${broker.hostname}:${broker.port || 5672}`, providers: [Secrets], service: unique('secret-pasted'), sync: { startupTimeout: '1s' } });
    await expect(bootstrap).rejects.toThrow(/Percent-encode the user name and password/);
    await bootstrap.catch((error: unknown) => capture.thrown('a bootstrap with a password pasted unencoded', error));

    const written = capture.lines.slice(from);
    expect(written.length).toBeGreaterThan(0);
    expect(written.filter((line) => line.text.includes(pasted) || line.text.includes(pasted.split('#')[1])).map((line) => `${line.source}: ${line.text}`)).toEqual([]);
  });
});
