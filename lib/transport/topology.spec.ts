import { TopologyMismatchError } from '../errors/topology-mismatch.error.js';
import { deadLetterQueueName, explainDeclareError, retryQueueName } from './topology.js';

describe('topology names', () => {
  it('follows the wire contract', () => {
    expect(retryQueueName('billing.CustomerProjection.onUserCreated', 10_000)).toBe('billing.CustomerProjection.onUserCreated.retry.10000');
    expect(deadLetterQueueName('billing.X.y')).toBe('billing.X.y.dlq');
  });
});

describe('explainDeclareError', () => {
  it('names the argument, the queue and the fix', () => {
    const error = explainDeclareError(
      new Error(
        `Channel closed by server: 406 (PRECONDITION-FAILED) with message "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'billing.A.b' in vhost '/': received 'quorum' but current is 'classic'"`,
      ),
    );
    expect(error).toBeInstanceOf(TopologyMismatchError);
    expect((error as TopologyMismatchError).argument).toBe('x-queue-type');
    expect((error as Error).message).toContain('billing.A.b');
    expect((error as Error).message).toContain('rabbitmqctl delete_queue billing.A.b');
  });

  it('leaves other errors alone', () => {
    const original = new Error('boom');
    expect(explainDeclareError(original)).toBe(original);
  });
});
