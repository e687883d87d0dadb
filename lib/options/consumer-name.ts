const CONSUMER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/;

/** A consumer name becomes part of queue names: plain words only. Returns the problem, or undefined. */
export function consumerNameProblem(consumer: unknown): string | undefined {
  if (typeof consumer === 'string' && CONSUMER_NAME.test(consumer)) return undefined;
  return `consumer ${JSON.stringify(consumer)} is not valid: use letters, digits, '.', '_' and '-' (it names a queue)`;
}
