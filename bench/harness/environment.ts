import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import type { BrokerAdmin } from './broker-admin.js';
import type { DatabaseAdmin } from './database-admin.js';
import { GOLEVELUP_DIR, REPO_DIR } from './paths.js';

export interface Environment {
  machine: { cpu: string; cores: number; ramGb: number; os: string; node: string };
  services: { rabbitmq: string; postgres: string; sqlite?: string };
  /** nestjs-event-sync: version, commit, and whether lib/ differs from it. */
  library: string;
  packages: Record<string, string>;
  golevelupPackages: Record<string, string>;
}

const ROOT_PACKAGES = ['amqplib', 'amqp-connection-manager', '@nestjs/core', '@nestjs/microservices', '@nestjs/typeorm', 'typeorm', 'pg', 'better-sqlite3'];
const GOLEVELUP_PACKAGES = ['@golevelup/nestjs-rabbitmq', '@nestjs/core', '@nestjs/typeorm', 'typeorm', 'amqplib', 'amqp-connection-manager', 'pg'];

/** Read at run time: what the figures were measured on. */
export async function describeEnvironment(broker: BrokerAdmin, database: DatabaseAdmin): Promise<Environment> {
  const cpus = os.cpus();
  const versions = await database.versions();
  return {
    machine: {
      cpu: cpus[0]?.model.trim() ?? 'unknown',
      cores: cpus.length,
      ramGb: Math.round(os.totalmem() / 2 ** 30),
      os: `${os.type()} ${os.release()}`,
      node: process.version,
    },
    services: { rabbitmq: broker.serverVersion, postgres: `PostgreSQL ${versions.postgres}`, sqlite: versions.sqlite && `SQLite ${versions.sqlite}` },
    library: libraryVersion(),
    packages: packageVersions(REPO_DIR, ROOT_PACKAGES),
    golevelupPackages: existsSync(join(GOLEVELUP_DIR, 'node_modules')) ? packageVersions(GOLEVELUP_DIR, GOLEVELUP_PACKAGES) : {},
  };
}

function packageVersions(root: string, names: string[]): Record<string, string> {
  const versions: Record<string, string> = {};
  for (const name of names) {
    try {
      versions[name] = JSON.parse(readFileSync(join(root, 'node_modules', name, 'package.json'), 'utf8')).version;
    } catch {
      versions[name] = 'not installed';
    }
  }
  return versions;
}

function libraryVersion(): string {
  const version = JSON.parse(readFileSync(join(REPO_DIR, 'package.json'), 'utf8')).version as string;
  try {
    const commit = execFileSync('git', ['-C', REPO_DIR, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
    const changed = execFileSync('git', ['-C', REPO_DIR, 'status', '--porcelain', '--', 'lib'], { encoding: 'utf8' }).trim();
    return `${version} (commit ${commit}${changed ? ', with uncommitted changes in lib/' : ''})`;
  } catch {
    return version;
  }
}
