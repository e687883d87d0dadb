import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import { Broker } from '../support/broker.js';
import { AMQP_URL } from '../support/env.js';
import { unique } from '../support/wait.js';

const run = promisify(execFile);
const ROOT = new URL('../../', import.meta.url).pathname;
const RUN_TIMEOUT_MS = 45_000;

interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the compiled sample runner the way `npm run sample` does after its build steps. */
function runSample(env: Record<string, string>): Promise<Outcome> {
  const { DATABASE_URL: _sharedDatabase, ...inherited } = process.env;
  const child = spawn(process.execPath, ['sample/dist/run-sample.js'], { cwd: ROOT, env: { ...inherited, NO_COLOR: '1', ...env } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGINT'), RUN_TIMEOUT_MS);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function rabbitmqctl(...args: string[]): Promise<void> {
  await run('rabbitmqctl', args, { timeout: 60_000 });
}

describe('sample (npm run sample)', () => {
  // A vhost of its own: the sample's queue names are fixed and it empties its dead-letter queue.
  const vhost = unique('sample');
  const amqpUrl = Object.assign(new URL(AMQP_URL), { pathname: `/${vhost}` }).toString();
  const dataDir = mkdtempSync(join(tmpdir(), 'sync-sample-'));

  beforeAll(async () => {
    await run('npm', ['run', 'build'], { cwd: ROOT, timeout: 120_000 });
    await run(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'sample/tsconfig.json'], { cwd: ROOT, timeout: 120_000 });
    await rabbitmqctl('add_vhost', vhost);
    await rabbitmqctl('set_permissions', '-p', vhost, 'guest', '.*', '.*', '.*');
  }, 180_000);

  afterAll(async () => {
    await rabbitmqctl('delete_vhost', vhost);
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('syncs users into billing, retries the flaky handler, dead-letters its message and stops both services', async () => {
    const [usersPort, billingPort] = [await freePort(), await freePort()];
    const outcome = await runSample({ AMQP_URL: amqpUrl, SQLITE_DIR: dataDir, USERS_PORT: String(usersPort), BILLING_PORT: String(billingPort) });

    expect({ code: outcome.code, stderr: outcome.stderr }).toEqual({ code: 0, stderr: '' });
    expect(outcome.stdout).toContain('customers in billing from this run: 3');
    expect(outcome.stdout).toMatch(/failed on attempt 1 of 3 \(Error: audit store timed out\); retry 1 of 2 in 500 ms/);
    expect(outcome.stdout).toMatch(/dead-lettered to billing\.AuditTrail\.onUserChanged\.dlq \(exhausted after 3 attempt\(s\)/);
    expect(outcome.stdout).toContain('billing-service stopped (SIGTERM)');
    expect(outcome.stdout).toContain('users-service stopped (SIGTERM)');

    const billing = new Database(join(dataDir, 'billing.sqlite'), { readonly: true });
    try {
      expect(billing.prepare('SELECT name, version FROM customers ORDER BY name').all()).toEqual([
        { name: 'Ada Lovelace', version: 1 },
        { name: 'Flaky Fred', version: 1 },
        { name: 'Grace Brewster Hopper', version: 2 },
      ]);
      expect(billing.prepare('SELECT eventType, attempt FROM audit_entries ORDER BY eventType, attempt').all()).toEqual([
        { eventType: 'UserCreated', attempt: 1 },
        { eventType: 'UserCreated', attempt: 1 },
        { eventType: 'UserUpdated', attempt: 2 },
      ]);
    } finally {
      billing.close();
    }

    const broker = await Broker.connect(amqpUrl);
    try {
      const deadLetter = await broker.channel.get('billing.AuditTrail.onUserChanged.dlq', { noAck: true });
      expect(deadLetter && JSON.parse(deadLetter.content.toString()).data.name).toBe('Flaky Fred');
      expect(deadLetter && deadLetter.properties.headers).toMatchObject({ 'sync-reason': 'exhausted', 'sync-attempts': 3 });
      expect((await broker.channel.checkQueue('billing.AuditTrail.onUserChanged.dlq')).messageCount).toBe(0);
    } finally {
      await broker.close();
    }
  }, 60_000);

  it('says how to start a broker and starts nothing when none answers', async () => {
    const closedPort = await freePort();
    const outcome = await runSample({ AMQP_URL: `amqp://guest:guest@127.0.0.1:${closedPort}`, SQLITE_DIR: dataDir });

    expect(outcome.code).toBe(1);
    expect(outcome.stderr).toContain('Cannot connect to RabbitMQ at amqp://guest:***@127.0.0.1:');
    expect(outcome.stderr).toContain('rabbitmq-server -detached');
    expect(outcome.stdout).toBe('');
  });
});
