import { PublishesEvent } from '../decorators/publishes-event.decorator.js';
import { recordPublishedEvents } from './recording-publisher.js';

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
