export interface Spread {
  median: number;
  min: number;
  max: number;
  n: number;
}

export function spread(values: Array<number | undefined>): Spread | undefined {
  const present = values.filter((value): value is number => value !== undefined && Number.isFinite(value)).sort((x, y) => x - y);
  if (present.length === 0) return undefined;
  const middle = present.length >> 1;
  const median = present.length % 2 ? present[middle] : (present[middle - 1] + present[middle]) / 2;
  return { median, min: present[0], max: present[present.length - 1], n: present.length };
}

/** events per second from a count and two monotonic-clock instants in ms. */
export function rate(count: number, fromMs: number, toMs: number): number {
  return count / ((toMs - fromMs) / 1000);
}
