/**
 * Runs the two sample services against a real broker, drives them over HTTP and shows what
 * reached billing: `npm run sample` (builds the library and this folder first).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import amqp from 'amqplib';
import { deadLetterQueueName } from 'nestjs-event-sync';

const AMQP_URL = process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const USERS_PORT = Number(process.env.USERS_PORT ?? 3001);
const BILLING_PORT = Number(process.env.BILLING_PORT ?? 3002);
const FLAKY_DLQ = deadLetterQueueName('billing.AuditTrail.onUserChanged');
const DIST = fileURLToPath(new URL('.', import.meta.url));
const DATA_DIR = process.env.SQLITE_DIR ?? fileURLToPath(new URL('../data/', import.meta.url));
const STARTUP_TIMEOUT_MS = 30_000;
const SYNC_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 15_000;

interface Service {
  name: string;
  url: string;
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

interface UserView {
  id: string;
  name: string;
  version: number;
}

const services: Service[] = [];

async function main(): Promise<void> {
  await assertBrokerReachable();
  resetSampleState();
  await purgeFlakyDeadLetters();

  // One after the other: with DATABASE_URL both share a database, and two schema syncs at once race.
  const users = await start('users', 'users-service/main.js', USERS_PORT);
  const billing = await start('billing', 'billing-service/main.js', BILLING_PORT);

  const ada = await call<UserView>(users, 'POST', '/users', { name: 'Ada Lovelace', email: 'ada@example.com' });
  const grace = await call<UserView>(users, 'POST', '/users', { name: 'Grace Hopper', email: 'grace@example.com' });
  const fred = await call<UserView>(users, 'POST', '/users', { name: 'Flaky Fred', email: 'fred@example.com' });
  const graceRenamed = await call<UserView>(users, 'PATCH', `/users/${grace.id}`, { name: 'Grace Brewster Hopper' });
  const expected = [ada, graceRenamed, fred];

  say(`waiting until billing has ${expected.length} customers with their latest names and ${FLAKY_DLQ} holds 1 message`);
  const outcome = await waitFor(SYNC_TIMEOUT_MS, 'billing to catch up', async () => {
    const customers = await call<UserView[]>(billing, 'GET', '/customers', undefined, { quiet: true });
    const synced = expected.every((user) => customers.some((customer) => customer.id === user.id && customer.name === user.name));
    const deadLetters = await countMessages(FLAKY_DLQ);
    const audit = await call<Array<{ userId: string }>>(billing, 'GET', '/audit-entries', undefined, { quiet: true });
    // Ada's and Grace's creation plus Grace's rename (after one retry); Fred's never lands.
    const audited = audit.filter((entry) => expected.some((user) => user.id === entry.userId)).length;
    return synced && deadLetters >= 1 && audited >= 3 ? { customers, deadLetters, audited } : undefined;
  });

  const health = await call<{ sync: Record<string, number> }>(billing, 'GET', '/health', undefined, { quiet: true });
  const deadLetter = await peekDeadLetter(FLAKY_DLQ);
  say('summary');
  const ours = outcome.customers.filter((customer) => expected.some((user) => user.id === customer.id));
  say(`  customers in billing from this run: ${ours.length} (${outcome.customers.length} in its table)`);
  for (const customer of ours) say(`    ${customer.id}  ${customer.name}  v${customer.version}`);
  say(`  audit entries for this run: ${outcome.audited}`);
  say(`  ${FLAKY_DLQ}: ${outcome.deadLetters} message(s)${deadLetter ? `, first: ${deadLetter}` : ''}`);
  const { handled, retried, deadLettered, duplicates } = health.sync;
  say(`  billing handler runs: handled=${handled} retried=${retried} deadLettered=${deadLettered} duplicates=${duplicates}`);

  await stopAll();
  say('done');
}

/** Fails fast with one actionable message instead of two services waiting for a broker forever. */
async function assertBrokerReachable(): Promise<void> {
  try {
    const connection = await amqp.connect(AMQP_URL, { timeout: 3000 });
    await connection.close();
  } catch (error) {
    console.error(
      `Cannot connect to RabbitMQ at ${maskUrl(AMQP_URL)} (${describeError(error)}).\n` +
        'Start a local broker with `rabbitmq-server -detached`, or set AMQP_URL to a running one ' +
        '(e.g. AMQP_URL=amqp://user:pass@host:5672), then run `npm run sample` again.',
    );
    process.exit(1);
  }
}

/** Fresh SQLite files each run; events are new each run too, so the broker's queues need no reset. */
function resetSampleState(): void {
  if (process.env.DATABASE_URL) return;
  for (const file of ['users.sqlite', 'billing.sqlite']) rmSync(join(DATA_DIR, file), { force: true });
}

/** So the count shown at the end is this run's; earlier runs' dead letters are dropped. */
async function purgeFlakyDeadLetters(): Promise<void> {
  await withChannel(async (channel) => {
    const { messageCount } = await channel.purgeQueue(FLAKY_DLQ);
    if (messageCount > 0) say(`emptied ${FLAKY_DLQ} (${messageCount} message(s) from earlier runs)`);
  }).catch(() => undefined); // not declared yet: billing declares it on its first start
}

async function start(name: string, entry: string, port: number): Promise<Service> {
  const child = spawn(process.execPath, [join(DIST, entry)], {
    env: { ...process.env, PORT: String(port), AMQP_URL, ...(process.stdout.isTTY ? {} : { NO_COLOR: '1' }) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  for (const stream of [child.stdout, child.stderr]) {
    createInterface({ input: stream! }).on('line', (line) => console.log(`${name.padEnd(7)} | ${compact(line)}`));
  }
  const service: Service = { name, url: `http://127.0.0.1:${port}`, child, exited };
  services.push(service);

  let gone = false;
  void exited.then(() => (gone = true));
  await waitFor(STARTUP_TIMEOUT_MS, `${name}-service to answer ${service.url}/health`, async () => {
    if (gone) throw new Error(`${name}-service exited during startup (see its log above)`);
    const health = await call<{ pid: number }>(service, 'GET', '/health', undefined, { quiet: true }).catch(() => undefined);
    // The pid check catches a leftover process from an earlier run still holding the port.
    if (health && health.pid !== child.pid) throw new Error(`port ${port} is taken by another process (pid ${health.pid}); stop it or set ${name.toUpperCase()}_PORT`);
    return health;
  });
  say(`${name}-service is up on ${service.url}`);
  return service;
}

async function call<T>(service: Service, method: string, path: string, body?: unknown, options: { quiet?: boolean } = {}): Promise<T> {
  const response = await fetch(`${service.url}${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${service.url}${path} answered ${response.status}: ${text}`);
  if (!options.quiet) say(`${method} ${path} ${body === undefined ? '' : `${JSON.stringify(body)} `}-> ${response.status} ${text}`);
  return JSON.parse(text) as T;
}

async function countMessages(queue: string): Promise<number> {
  return withChannel(async (channel) => (await channel.checkQueue(queue)).messageCount).catch(() => 0);
}

/** Reads the first dead letter's verdict and puts the message back. */
async function peekDeadLetter(queue: string): Promise<string | undefined> {
  return withChannel(async (channel) => {
    const message = await channel.get(queue, { noAck: false });
    if (!message) return undefined;
    channel.nack(message, false, true);
    const headers = message.properties.headers ?? {};
    const { eventType, eventId } = JSON.parse(message.content.toString()) as { eventType: string; eventId: string };
    return `${eventType} ${eventId}, sync-reason=${headers['sync-reason']}, sync-attempts=${headers['sync-attempts']}, sync-error-message=${JSON.stringify(headers['sync-error-message'])}`;
  });
}

async function withChannel<T>(work: (channel: amqp.Channel) => Promise<T>): Promise<T> {
  const connection = await amqp.connect(AMQP_URL, { timeout: 3000 });
  // A missing queue closes the channel with an error event; the awaited call rejects with it already.
  connection.on('error', () => undefined);
  try {
    const channel = await connection.createChannel();
    channel.on('error', () => undefined);
    return await work(channel);
  } finally {
    await connection.close().catch(() => undefined);
  }
}

/** SIGTERM, as an orchestrator would send: each service drains and exits on its own. */
async function stopAll(): Promise<void> {
  const running = services.splice(0).reverse();
  for (const service of running) {
    if (service.child.exitCode === null && service.child.signalCode === null) service.child.kill('SIGTERM');
  }
  for (const service of running) {
    const timer = setTimeout(() => service.child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    const { code, signal } = await service.exited;
    clearTimeout(timer);
    if (signal === 'SIGKILL') throw new Error(`${service.name}-service did not stop within ${STOP_TIMEOUT_MS} ms of SIGTERM`);
    say(`${service.name}-service stopped (${signal ?? `exit code ${code}`})`);
  }
}

async function waitFor<T>(timeoutMs: number, what: string, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** Drops Nest's "[Nest] <pid>  - <date>" prefix: the runner's own prefix says which service spoke. */
function compact(line: string): string {
  return line.replace(/^\[Nest\] \d+\s+-\s+.*?\s{2,}(LOG|WARN|ERROR|DEBUG|VERBOSE|FATAL) /, '$1 ');
}

function say(message: string): void {
  console.log(`sample  | ${message}`);
}

function maskUrl(url: string): string {
  return url.replace(/\/\/([^:/@]+):[^@]*@/, '//$1:***@');
}

function describeError(error: unknown): string {
  if (error instanceof AggregateError) return error.errors.map(describeError).join(', ');
  const { code, message } = error as { code?: string; message?: string };
  return code ?? message ?? String(error);
}

process.once('SIGINT', () => void stopAll().finally(() => process.exit(130)));

main().catch(async (error: Error) => {
  console.error(`sample  | FAILED: ${error.message}`);
  await stopAll().catch(() => undefined);
  process.exit(1);
});
