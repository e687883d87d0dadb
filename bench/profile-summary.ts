/**
 * Where a consumer's CPU time goes: `node bench/dist/profile-summary.js <file.cpuprofile> [top]`
 * prints the top self-time functions and the self time per package, from a profile written by
 * `npm run bench -- --cpu-prof`.
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

interface ProfileSummary {
  totalMs: number;
  functions: Array<{ name: string; where: string; selfMs: number; pct: number }>;
  packages: Array<{ name: string; selfMs: number; pct: number }>;
}

function summarizeProfile(profile: Profile, top = 25): ProfileSummary {
  const selfUs = new Map<number, number>();
  profile.samples.forEach((nodeId, i) => selfUs.set(nodeId, (selfUs.get(nodeId) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  const total = [...selfUs.values()].reduce((sum, us) => sum + us, 0);
  const byFunction = new Map<string, { name: string; where: string; us: number }>();
  const byPackage = new Map<string, number>();
  for (const node of profile.nodes) {
    const us = selfUs.get(node.id) ?? 0;
    if (us === 0) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    const where = url ? `${shorten(url)}:${lineNumber + 1}` : '';
    const key = `${functionName}@${where}`;
    const entry = byFunction.get(key) ?? { name: functionName || '(anonymous)', where, us: 0 };
    entry.us += us;
    byFunction.set(key, entry);
    const pkg = packageOf(url, functionName);
    byPackage.set(pkg, (byPackage.get(pkg) ?? 0) + us);
  }
  const pct = (us: number) => (100 * us) / total;
  return {
    totalMs: total / 1000,
    functions: [...byFunction.values()]
      .sort((x, y) => y.us - x.us)
      .slice(0, top)
      .map((entry) => ({ name: entry.name, where: entry.where, selfMs: entry.us / 1000, pct: pct(entry.us) })),
    packages: [...byPackage.entries()].sort((x, y) => y[1] - x[1]).map(([name, us]) => ({ name, selfMs: us / 1000, pct: pct(us) })),
  };
}

function shorten(url: string): string {
  const path = url.replace(/^file:\/\//, '');
  const modules = path.lastIndexOf('node_modules/');
  if (modules >= 0) return path.slice(modules + 'node_modules/'.length);
  const repo = path.search(/\/(dist|bench)\//);
  return repo >= 0 ? path.slice(repo + 1) : path;
}

/** Self time grouped by where the code lives: a package, this library's dist/, the benchmark, Node, or V8. */
function packageOf(url: string, functionName: string): string {
  if (!url) return functionName.startsWith('(') ? functionName : '(native / V8)';
  if (url.startsWith('node:')) return 'node (core)';
  const path = url.replace(/^file:\/\//, '');
  const modules = path.lastIndexOf('node_modules/');
  if (modules >= 0) {
    const rest = path.slice(modules + 'node_modules/'.length).split('/');
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0];
  }
  if (/\/bench\//.test(path)) return 'benchmark worker';
  if (/\/dist\//.test(path)) return 'nestjs-event-sync (dist/)';
  return 'other';
}

function main(): void {
  const [file, topArg] = process.argv.slice(2);
  if (!file) {
    console.error('usage: node bench/dist/profile-summary.js <file.cpuprofile> [top]');
    process.exit(2);
  }
  const summary = summarizeProfile(JSON.parse(readFileSync(file, 'utf8')) as Profile, Number(topArg ?? 25));
  console.log(`${file}: ${summary.totalMs.toFixed(0)} ms of samples\n`);
  console.log('self time by package:');
  for (const entry of summary.packages) console.log(`  ${entry.pct.toFixed(1).padStart(5)} %  ${entry.selfMs.toFixed(0).padStart(7)} ms  ${entry.name}`);
  console.log('\ntop functions by self time:');
  for (const entry of summary.functions) console.log(`  ${entry.pct.toFixed(1).padStart(5)} %  ${entry.selfMs.toFixed(0).padStart(7)} ms  ${entry.name}  ${entry.where}`);
}

main();
