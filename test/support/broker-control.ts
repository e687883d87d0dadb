import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);
const COMMAND_TIMEOUT_MS = 120_000;

async function rabbitmqctl(...args: string[]): Promise<void> {
  await run('rabbitmqctl', args, { timeout: COMMAND_TIMEOUT_MS });
}

/** Stops the RabbitMQ application in place (the Erlang node stays up), closing every client connection. */
export async function stopBroker(): Promise<void> {
  await rabbitmqctl('stop_app');
}

/**
 * Starts the RabbitMQ application and waits until it accepts connections. Idempotent: on a running
 * broker it returns at once. If the whole node is down, it starts the server as SERVICES.md says.
 */
export async function startBroker(): Promise<void> {
  try {
    await rabbitmqctl('start_app');
  } catch {
    await run('rabbitmq-server', ['-detached'], { timeout: COMMAND_TIMEOUT_MS });
  }
  await rabbitmqctl('await_startup');
}

export interface QueueDepth {
  ready: number;
  unacked: number;
  consumers: number;
}

/** Ready and unacknowledged messages of a queue as the broker counts them (AMQP's checkQueue sees only the ready ones). */
export async function queueDepth(queue: string): Promise<QueueDepth | undefined> {
  return (await queueDepths()).get(queue);
}

/** Every queue whose name starts with `prefix`, with its depths, from one `rabbitmqctl list_queues`. */
export async function queueDepths(prefix = ''): Promise<Map<string, QueueDepth>> {
  const rows = await listQueues(prefix, 'messages_ready', 'messages_unacknowledged', 'consumers');
  return new Map([...rows].map(([name, [ready, unacked, consumers]]) => [name, { ready: Number(ready), unacked: Number(unacked), consumers: Number(consumers) }]));
}

/** `rabbitmqctl list_queues` of the given columns (after the name) for every queue whose name starts with `prefix`. */
export async function listQueues(prefix: string, ...columns: string[]): Promise<Map<string, string[]>> {
  const { stdout } = await run('rabbitmqctl', ['list_queues', '-q', '--no-table-headers', 'name', ...columns], { timeout: COMMAND_TIMEOUT_MS });
  const queues = new Map<string, string[]>();
  for (const line of stdout.split('\n')) {
    const [name, ...values] = line.split('\t');
    if (name && name.startsWith(prefix) && values.length === columns.length) queues.set(name, values);
  }
  return queues;
}

/** Runs `fn` while the broker is stopped; the broker is running again afterwards, whatever `fn` did. */
export async function withBrokerStopped<T>(fn: () => Promise<T>): Promise<T> {
  try {
    await stopBroker();
    return await fn();
  } finally {
    await startBroker();
  }
}

// Every suite that stops the broker imports this module: whatever happened in it, the broker that
// other suites share is running when the suite ends.
afterAll(async () => {
  await startBroker();
}, COMMAND_TIMEOUT_MS);
