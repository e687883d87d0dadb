import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** bench/dist (where this file runs from, compiled). */
export const BENCH_DIST = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const BENCH_DIR = resolve(BENCH_DIST, '..');
export const REPO_DIR = resolve(BENCH_DIR, '..');
export const RESULTS_DIR = resolve(BENCH_DIR, 'results');
export const RESULTS_FILE = resolve(BENCH_DIR, 'RESULTS.md');
export const GOLEVELUP_DIR = resolve(BENCH_DIR, 'golevelup');
export const workerScript = (name: string): string => resolve(BENCH_DIST, 'workers', `${name}.js`);
export const golevelupScript = (name: string): string => resolve(GOLEVELUP_DIR, 'dist', 'golevelup', 'src', `${name}.js`);
