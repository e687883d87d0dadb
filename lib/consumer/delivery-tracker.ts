/**
 * The deliveries of one channel that are not settled yet, in delivery-tag order, so a batch can
 * be acked with one `basic.ack` (multiple) up to the highest tag below which nothing is still
 * running. A tag enters when the message arrives and leaves once settled (ack, nack, retry or
 * dead-letter copy); only a tag that entered can hold the acked range back, and every delivery
 * on a tracked channel enters first thing, so a multiple ack never covers a running message.
 */
export class DeliveryTracker {
  private readonly order: number[] = [];
  private head = 0;
  private readonly done = new Set<number>();
  private ackedUpTo = 0;

  delivered(tag: number): void {
    this.order.push(tag);
  }

  settled(tag: number): void {
    this.done.add(tag);
  }

  /**
   * Marks `tags` (a batch being acked now) settled and returns the tag to send a multiple ack
   * for, or 0 for none: the highest of `tags` at or below which every delivery is settled. It is
   * one of `tags` because RabbitMQ refuses a multiple ack whose own tag is already settled (it
   * closes the channel with "unknown delivery tag"); the rest of `tags` are acked one by one.
   */
  ackable(tags: number[]): number {
    for (const tag of tags) this.done.add(tag);
    const { order, done } = this;
    while (this.head < order.length && done.has(order[this.head])) {
      done.delete(order[this.head]);
      this.ackedUpTo = order[this.head];
      this.head += 1;
    }
    if (this.head > 1024 && this.head * 2 > order.length) {
      order.splice(0, this.head);
      this.head = 0;
    }
    let upTo = 0;
    for (const tag of tags) if (tag <= this.ackedUpTo && tag > upTo) upTo = tag;
    return upTo;
  }

  get pending(): number {
    return this.order.length - this.head;
  }
}
