const UNIT_MS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };
const DURATION = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$/;

export type Duration = number | string;

/** Parses `250`, `'250ms'`, `'10s'`, `'1m'`, `'2h'` into whole milliseconds; `undefined` when invalid. */
export function parseDuration(value: Duration): number | undefined {
  if (typeof value === 'number') {
    return Number.isFinite(value) && value >= 0 ? Math.round(value) : undefined;
  }
  if (typeof value !== 'string') return undefined;
  const match = DURATION.exec(value);
  if (!match) return undefined;
  return Math.round(Number(match[1]) * UNIT_MS[match[2]]);
}
