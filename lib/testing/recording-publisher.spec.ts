import { PublishesEvent } from '../decorators/publishes-event.decorator.js';
import { RecordingPublisher, recordPublishedEvents } from './recording-publisher.js';

class UsersService {
  @PublishesEvent('UserCreated', { key: (user: { id: string }) => user.id })
  async create(name: string) {
    return { id: `u-${name}`, name };
  }
}

describe('recordPublishedEvents', () => {
  it('records the envelopes a decorated method publishes', async () => {
    const service = new UsersService();
    const recorder = recordPublishedEvents(service, 'users');
    await service.create('ann');
    expect(recorder.ofType('UserCreated')).toEqual([
      expect.objectContaining({ eventType: 'UserCreated', source: 'users', key: 'u-ann', data: { id: 'u-ann', name: 'ann' } }),
    ]);
    expect(recorder.events[0].eventId).toMatch(/^[0-9a-f-]{36}$/);
  });
});

describe('RecordingPublisher.transaction', () => {
  it('keeps the events of a transaction that resolves and drops those of one that throws', async () => {
    const recorder = new RecordingPublisher('users');
    await expect(
      recorder.transaction(async () => {
        await recorder.publish('UserCreated', { id: 'rolled-back' });
        throw new Error('rollback');
      }),
    ).rejects.toThrow('rollback');
    await recorder.transaction(() => recorder.publish('UserCreated', { id: 'kept' }));
    expect(recorder.events.map((event) => event.data)).toEqual([{ id: 'kept' }]);
  });
});
