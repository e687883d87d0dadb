import { Injectable, Logger } from '@nestjs/common';
import { EventContext, OnEvent } from 'nestjs-event-sync';
import { AuditEntry } from './audit-entry.entity.js';
import type { UserEvent } from './user-event.js';

/**
 * Deliberately flaky, to show retries and the dead-letter queue: a user whose name contains
 * "flaky" always fails (3 runs, then billing.AuditTrail.onUserChanged.dlq); every UserUpdated
 * fails on its first run only and succeeds on the retry 500 ms later.
 */
@Injectable()
export class AuditTrail {
  private readonly logger = new Logger(AuditTrail.name);

  @OnEvent(['UserCreated', 'UserUpdated'], { retry: { attempts: 3, delays: ['500ms'] } })
  async onUserChanged(user: UserEvent, ctx: EventContext): Promise<void> {
    this.logger.log(`${ctx.eventType} ${ctx.eventId} attempt ${ctx.attempt}: user ${user.id} "${user.name}"`);
    if (/flaky/i.test(user.name)) throw new Error(`audit store refuses "${user.name}"`);
    if (ctx.eventType === 'UserUpdated' && ctx.attempt === 1) throw new Error('audit store timed out');
    await ctx.manager.save(AuditEntry, { eventId: ctx.eventId, eventType: ctx.eventType, userId: user.id, attempt: ctx.attempt });
  }
}
