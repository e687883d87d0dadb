import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { POSTGRES_URL } from './env.js';
import { waitFor } from './wait.js';

const run = promisify(execFile);
const COMMAND_TIMEOUT_MS = 120_000;
const READY_TIMEOUT_MS = 60_000;

export interface PostgresCluster {
  version: string;
  cluster: string;
  port: number;
  /** `online`, `down`, or `online,recovery` as pg_lsclusters says. */
  status: string;
}

function address(): { host: string; port: number } {
  const url = new URL(POSTGRES_URL);
  return { host: url.hostname || '127.0.0.1', port: Number(url.port || 5432) };
}

/** The Debian cluster serving the test database's port, as pg_lsclusters lists it. */
export async function postgresCluster(): Promise<PostgresCluster> {
  const { port } = address();
  const { stdout } = await run('pg_lsclusters', ['-h'], { timeout: COMMAND_TIMEOUT_MS });
  for (const line of stdout.split('\n')) {
    const [version, cluster, clusterPort, status] = line.trim().split(/\s+/);
    if (Number(clusterPort) === port) return { version, cluster, port, status };
  }
  throw new Error(`no PostgreSQL cluster on port ${port} (pg_lsclusters: ${stdout.trim() || '<none>'})`);
}

async function pgCtlCluster(cluster: PostgresCluster, action: 'start' | 'restart'): Promise<void> {
  await run('pg_ctlcluster', ['--skip-systemctl-redirect', cluster.version, cluster.cluster, action], { timeout: COMMAND_TIMEOUT_MS });
}

async function isReady(): Promise<boolean> {
  const { host, port } = address();
  try {
    await run('pg_isready', ['-q', '-h', host, '-p', String(port)], { timeout: COMMAND_TIMEOUT_MS });
    return true;
  } catch {
    return false;
  }
}

/** Waits until PostgreSQL accepts connections (pg_isready), up to `timeoutMs`. */
export async function waitForPostgres(timeoutMs = READY_TIMEOUT_MS): Promise<void> {
  await waitFor(isReady, { timeoutMs, intervalMs: 200, what: 'PostgreSQL to accept connections (pg_isready)' });
}

/** Restarts the PostgreSQL cluster (fast shutdown: every client connection is cut) and waits until it accepts connections again. */
export async function restartPostgres(): Promise<void> {
  await pgCtlCluster(await postgresCluster(), 'restart');
  await waitForPostgres();
}

/** Idempotent: on a running server it returns at once; a stopped cluster is started and waited for. */
export async function startPostgres(): Promise<void> {
  if (await isReady()) return;
  const cluster = await postgresCluster();
  if (!cluster.status.startsWith('online')) await pgCtlCluster(cluster, 'start');
  await waitForPostgres();
}

// Every suite that restarts PostgreSQL imports this module: whatever happened in it, the server
// that other suites share is running when the suite ends.
afterAll(async () => {
  await startPostgres();
}, COMMAND_TIMEOUT_MS);
