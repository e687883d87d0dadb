import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { BENCH_DIR, GOLEVELUP_DIR, REPO_DIR, golevelupScript } from './paths.js';

/**
 * Scenario (c) runs on Nest 11 (@golevelup/nestjs-rabbitmq 9 declares peer Nest ^11), so it has
 * its own package.json and install in bench/golevelup. Installs it on first use and compiles its
 * workers when their sources changed.
 */
export function prepareGolevelup(log: (line: string) => void): void {
  if (!existsSync(join(GOLEVELUP_DIR, 'node_modules', '@golevelup', 'nestjs-rabbitmq', 'package.json'))) {
    log('installing bench/golevelup (once): npm install');
    run('npm', ['install', '--no-audit', '--no-fund'], GOLEVELUP_DIR, 'npm install in bench/golevelup');
  }
  const outputs = [golevelupScript('golevelup.consumer'), golevelupScript('golevelup.publisher')];
  const sources = [...tsFiles(join(GOLEVELUP_DIR, 'src')), ...tsFiles(join(BENCH_DIR, 'workers', 'runtime')), join(GOLEVELUP_DIR, 'tsconfig.json')];
  const built = outputs.every(existsSync) ? Math.min(...outputs.map((file) => statSync(file).mtimeMs)) : 0;
  if (sources.some((file) => statSync(file).mtimeMs > built)) {
    log('compiling bench/golevelup');
    run(process.execPath, [join(REPO_DIR, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(GOLEVELUP_DIR, 'tsconfig.json')], REPO_DIR, 'tsc -p bench/golevelup/tsconfig.json');
  }
}

function tsFiles(dir: string): string[] {
  return readdirSync(dir)
    .filter((name) => name.endsWith('.ts'))
    .map((name) => join(dir, name));
}

function run(command: string, args: string[], cwd: string, what: string): void {
  const result = spawnSync(command, args, { cwd, stdio: 'inherit' });
  if (result.status !== 0) throw new Error(`${what} failed (exit ${result.status ?? result.signal})`);
}
