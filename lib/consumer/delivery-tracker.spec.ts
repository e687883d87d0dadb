import { DeliveryTracker } from './delivery-tracker.js';

describe('DeliveryTracker', () => {
  const deliver = (tracker: DeliveryTracker, ...tags: number[]) => tags.forEach((tag) => tracker.delivered(tag));

  it('acks a batch up to its highest tag when nothing below it is still running', () => {
    const tracker = new DeliveryTracker();
    deliver(tracker, 1, 2, 3, 4, 5);
    expect(tracker.ackable([1, 2, 3])).toBe(3);
    expect(tracker.ackable([4, 5])).toBe(5);
    expect(tracker.pending).toBe(0);
  });

  it('never goes past a delivery that is still running', () => {
    const tracker = new DeliveryTracker();
    deliver(tracker, 1, 2, 3, 4, 5, 6);
    // 1 is running; a batch of 2–4 finishes first: no multiple ack at all.
    expect(tracker.ackable([2, 3, 4])).toBe(0);
    // 1 finishes: everything up to 4 is settled, but 2–4 were acked already: the multiple ack
    // must name a tag still unacked at the broker, so it is 1 alone.
    expect(tracker.ackable([1])).toBe(1);
    expect(tracker.ackable([5])).toBe(5);
    expect(tracker.pending).toBe(1);
  });

  it('counts single acks and requeues as settled, so they do not hold the range back', () => {
    const tracker = new DeliveryTracker();
    deliver(tracker, 1, 2, 3, 4);
    tracker.settled(1); // retried or dead-lettered alone
    tracker.settled(2); // requeued at shutdown
    expect(tracker.ackable([4, 3])).toBe(4);
  });

  it('does not offer a multiple ack that covers none of the batch', () => {
    const tracker = new DeliveryTracker();
    deliver(tracker, 1, 2, 3);
    tracker.settled(1);
    expect(tracker.ackable([3])).toBe(0);
    expect(tracker.ackable([2])).toBe(2);
    expect(tracker.pending).toBe(0);
  });

  it('stays small over a long run', () => {
    const tracker = new DeliveryTracker();
    for (let tag = 1; tag <= 100_000; tag += 10) {
      const batch = Array.from({ length: 10 }, (_, i) => tag + i);
      deliver(tracker, ...batch);
      expect(tracker.ackable(batch)).toBe(tag + 9);
    }
    expect(tracker.pending).toBe(0);
    expect((tracker as unknown as { order: number[] }).order.length).toBeLessThan(2048);
  });
});
