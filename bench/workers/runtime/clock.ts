/**
 * Milliseconds on the machine's monotonic clock (CLOCK_MONOTONIC through hrtime). Every process
 * on one host reads the same clock, so a publisher's timestamp and a consumer's compare directly.
 */
export function now(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}
