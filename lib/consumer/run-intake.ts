import type { ConfirmChannel, ConsumeMessage } from 'amqplib';

/**
 * Where deliveries join a `parallel` run whose transaction is still open, instead of opening a
 * transaction of their own: each one then costs its dedupe insert and its handler on the run's
 * connection (pipelined on PostgreSQL), not a begin, a dedupe insert and a commit of its own.
 * It is open from the run's start until the handlers it started with have all settled (the
 * run's commit so waits for at most one more handler run), for at most `room` deliveries, all
 * of one channel.
 */
export class RunIntake {
  private room: number;
  private joined = 0;
  private closed = false;
  private readonly held: ConsumeMessage[] = [];
  private readonly returned: ConsumeMessage[] = [];
  private receiver?: (messages: ConsumeMessage[]) => void;

  constructor(
    readonly channel: ConfirmChannel,
    room: number,
  ) {
    this.room = room;
  }

  get open(): boolean {
    return !this.closed && this.room > 0;
  }

  /** How many deliveries joined the run in all. */
  get accepted(): number {
    return this.joined;
  }

  /** Offers the first of `messages` in order; returns how many joined (0 once closed or full). */
  offer(messages: ConsumeMessage[]): number {
    if (this.closed) return 0;
    const taken = messages.slice(0, this.room);
    if (taken.length === 0) return 0;
    this.room -= taken.length;
    this.joined += taken.length;
    if (this.receiver) this.receiver(taken);
    else this.held.push(...taken);
    return taken.length;
  }

  /** What joined since the last call, for a run that has not started its handlers yet. */
  take(): ConsumeMessage[] {
    return this.held.splice(0);
  }

  /** From now on `receiver` gets what joins, as it joins; returns what joined before. */
  receive(receiver: (messages: ConsumeMessage[]) => void): ConsumeMessage[] {
    if (!this.closed) this.receiver = receiver;
    return this.take();
  }

  /** A delivery that joined but cannot run in the batch (malformed, say): `leftovers` returns it. */
  giveBack(message: ConsumeMessage): void {
    this.returned.push(message);
  }

  /** Takes nothing more from now on. */
  close(): void {
    this.closed = true;
    this.receiver = undefined;
  }

  /** What joined and was never taken, and what was given back: the run settles them one by one. */
  leftovers(): ConsumeMessage[] {
    return [...this.take(), ...this.returned.splice(0)];
  }
}
