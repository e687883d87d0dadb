import type { ConfirmChannel, ConsumeMessage } from 'amqplib';
import { RunIntake } from './run-intake.js';

const channel = {} as ConfirmChannel;
const message = (tag: number) => ({ fields: { deliveryTag: tag } }) as ConsumeMessage;
const tags = (messages: ConsumeMessage[]) => messages.map((m) => m.fields.deliveryTag);

describe('RunIntake', () => {
  it('holds what joins before the run takes it, up to its room', () => {
    const intake = new RunIntake(channel, 3);
    expect(intake.offer([message(1), message(2)])).toBe(2);
    expect(intake.offer([message(3), message(4)])).toBe(1);
    expect(intake.open).toBe(false);
    expect(intake.offer([message(5)])).toBe(0);
    expect(tags(intake.take())).toEqual([1, 2, 3]);
    expect(intake.take()).toEqual([]);
    expect(intake.accepted).toBe(3);
  });

  it('hands what joins after `receive` straight to the receiver', () => {
    const intake = new RunIntake(channel, 5);
    intake.offer([message(1)]);
    const received: number[][] = [];
    expect(tags(intake.receive((messages) => received.push(tags(messages))))).toEqual([1]);
    intake.offer([message(2), message(3)]);
    intake.offer([message(4)]);
    expect(received).toEqual([[2, 3], [4]]);
    expect(intake.take()).toEqual([]);
  });

  it('takes nothing once closed, and returns what was never taken or was given back', () => {
    const intake = new RunIntake(channel, 5);
    intake.offer([message(1)]);
    intake.giveBack(message(7));
    intake.close();
    expect(intake.open).toBe(false);
    expect(intake.offer([message(2)])).toBe(0);
    expect(tags(intake.leftovers())).toEqual([1, 7]);
    expect(intake.leftovers()).toEqual([]);
    expect(intake.accepted).toBe(1);
  });

  it('takes nothing with no room, and gives a closed run no receiver', () => {
    expect(new RunIntake(channel, 0).offer([message(1)])).toBe(0);
    const intake = new RunIntake(channel, 2);
    intake.close();
    const received: ConsumeMessage[][] = [];
    intake.receive((messages) => received.push(messages));
    expect(intake.offer([message(1)])).toBe(0);
    expect(received).toEqual([]);
  });
});
