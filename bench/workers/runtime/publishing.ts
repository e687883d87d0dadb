import { now } from './clock.js';
import { type UserEvent, userEvent } from './events.js';
import type { BurstCommand, PublishResult, SteadyCommand } from './protocol.js';

export type PublishOne = (event: UserEvent) => Promise<unknown>;

/**
 * Publishes `count` events as fast as the client allows, with at most `window` publishes
 * awaiting their confirm at once; resolves when the last confirm is back.
 */
export function burst(publishOne: PublishOne, { tag, fromSeq, count, window }: BurstCommand): Promise<PublishResult> {
  return new Promise((resolve, reject) => {
    const end = fromSeq + count;
    let next = fromSeq;
    let inFlight = 0;
    let confirmed = 0;
    let failed = false;
    const firstPublishAt = now();
    const pump = (): void => {
      while (!failed && inFlight < window && next < end) {
        const event = userEvent(tag, next++);
        inFlight += 1;
        publishOne(event).then(
          () => {
            inFlight -= 1;
            confirmed += 1;
            if (confirmed === count) resolve({ count, firstPublishAt, lastConfirmAt: now() });
            else pump();
          },
          (error: unknown) => {
            failed = true;
            reject(error);
          },
        );
      }
    };
    pump();
  });
}

/** Publishes at a steady `rate` for `durationMs`, each event on its own schedule; resolves when every confirm is back. */
export async function steady(publishOne: PublishOne, { tag, fromSeq, rate, durationMs }: SteadyCommand): Promise<PublishResult> {
  const count = Math.round((rate * durationMs) / 1000);
  let settled = 0;
  let failure: unknown;
  let allSettled!: () => void;
  const finished = new Promise<void>((resolve) => (allSettled = resolve));
  const onSettled = (): void => {
    settled += 1;
    if (settled === count) allSettled();
  };
  const startedAt = now();
  let sent = 0;
  while (sent < count && failure === undefined) {
    const due = Math.min(count, Math.floor(((now() - startedAt) * rate) / 1000) + 1);
    while (sent < due) {
      publishOne(userEvent(tag, fromSeq + sent++)).then(onSettled, (error: unknown) => {
        failure ??= error;
        onSettled();
      });
    }
    if (sent < count) await new Promise((resolve) => setTimeout(resolve, 1));
  }
  if (failure !== undefined) throw failure;
  if (count > 0) await finished;
  if (failure !== undefined) throw failure;
  return { count, firstPublishAt: startedAt, lastConfirmAt: now() };
}
