import { Injectable, Logger } from '@nestjs/common';
import { EventContext, OnEvent } from 'nestjs-event-sync';
import { Customer } from './customer.entity.js';
import type { UserEvent } from './user-event.js';

@Injectable()
export class CustomerProjection {
  private readonly logger = new Logger(CustomerProjection.name);

  @OnEvent('UserCreated')
  async onUserCreated(user: UserEvent, ctx: EventContext): Promise<void> {
    await this.apply(user, ctx);
  }

  @OnEvent('UserUpdated')
  async onUserUpdated(user: UserEvent, ctx: EventContext): Promise<void> {
    await this.apply(user, ctx);
  }

  /**
   * Each handler has its own queue, so a UserUpdated may be handled before its UserCreated:
   * the version decides which state wins. Writes go through ctx.manager so they commit
   * together with the "processed" mark; a redelivered event is skipped by the library.
   */
  private async apply(user: UserEvent, ctx: EventContext): Promise<void> {
    this.logger.log(`${ctx.eventType} ${ctx.eventId} attempt ${ctx.attempt}: user ${user.id} "${user.name}" v${user.version}`);
    const current = await ctx.manager.findOneBy(Customer, { id: user.id });
    if (current && current.version >= user.version) {
      this.logger.log(`${ctx.eventType} ${ctx.eventId}: customer ${user.id} already at v${current.version}; older state ignored`);
      return;
    }
    // A concurrent insert of the same customer fails here with a duplicate key; the retry then sees the row.
    await ctx.manager.save(Customer, { id: user.id, name: user.name, email: user.email, version: user.version });
  }
}
