import { TopologyMismatchError } from '../errors/topology-mismatch.error.js';
import { deadLetterQueueName, explainDeclareError, keptModeWarning, QueueArguments, retryQueueName } from './topology.js';

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

const modeRefused = (queue: string, current: string) =>
  explainDeclareError(
    new Error(
      `Channel closed by server: 406 (PRECONDITION-FAILED) with message "PRECONDITION_FAILED - inequivalent arg 'x-queue-mode' for queue '${queue}' in vhost '/': received the value 'lazy' of type 'longstr' but current is ${current}"`,
    ),
  );

describe('QueueArguments', () => {
  it('declares classic queues lazy, or in RabbitMQ\'s default mode, and quorum queues without a mode', () => {
    expect(new QueueArguments('classic', 'lazy').of('a.b')).toEqual({ 'x-queue-mode': 'lazy' });
    expect(new QueueArguments('classic', 'default').of('a.b')).toEqual({});
    expect(new QueueArguments('quorum', 'lazy').of('a.b')).toEqual({ 'x-queue-type': 'quorum' });
  });

  it('lets an existing queue keep the mode RabbitMQ reports for it, once', () => {
    const args = new QueueArguments('classic', 'lazy');
    expect(args.keepMode(modeRefused('billing.A.b', 'none'))).toEqual({ queue: 'billing.A.b', mode: undefined });
    expect(args.of('billing.A.b')).toEqual({});
    expect(args.of('billing.A.b.dlq')).toEqual({ 'x-queue-mode': 'lazy' });
    expect(args.keepMode(modeRefused('billing.A.b.dlq', "the value 'default' of type 'longstr'"))).toEqual({ queue: 'billing.A.b.dlq', mode: 'default' });
    expect(args.of('billing.A.b.dlq')).toEqual({ 'x-queue-mode': 'default' });
    expect(args.keepMode(modeRefused('billing.A.b.retry.100', "'default'"))).toEqual({ queue: 'billing.A.b.retry.100', mode: 'default' });
    // Refused again with the queue's own mode: a real mismatch, not a mode to keep.
    expect(args.keepMode(modeRefused('billing.A.b', 'none'))).toBe(false);
  });

  it('keeps nothing for other refusals', () => {
    const args = new QueueArguments('classic', 'lazy');
    const typeRefused = explainDeclareError(
      new Error(`PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'billing.A.b' in vhost '/': received none but current is the value 'quorum' of type 'longstr'`),
    );
    expect(args.keepMode(typeRefused)).toBe(false);
    expect(args.keepMode(new Error('boom'))).toBe(false);
    expect(new QueueArguments('quorum', 'lazy').keepMode(modeRefused('billing.A.b', 'none'))).toBe(false);
  });

  it('reports a kept mode once, only when asked after the declare with it, and throws other refusals', () => {
    const args = new QueueArguments('classic', 'lazy');
    args.keepModeOrThrow(modeRefused('billing.A.b', 'none'));
    const typeRefused = new Error(
      `PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'billing.A.b' in vhost '/': received none but current is the value 'quorum' of type 'longstr'`,
    );
    expect(() => args.keepModeOrThrow(typeRefused)).toThrow(TopologyMismatchError);
    const warnings = args.takeWarnings();
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('"billing.A.b" already exists in RabbitMQ\'s default mode');
    expect(args.takeWarnings()).toEqual([]);
  });

  it('says how to make a kept queue lazy in place', () => {
    const warning = keptModeWarning({ queue: 'billing.A.b', mode: undefined });
    expect(warning).toContain('"billing.A.b"');
    expect(warning).toContain("'^billing\\.A\\.b$'");
    expect(warning).toContain('{"queue-mode":"lazy"}');
  });
});
