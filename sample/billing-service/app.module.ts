import { Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { SyncModule } from 'nestjs-event-sync';
import { AuditEntry } from './audit-entry.entity.js';
import { AuditTrail } from './audit-trail.js';
import { BillingController } from './billing.controller.js';
import { config, databaseOptions } from './config.js';
import { Customer } from './customer.entity.js';
import { CustomerProjection } from './customer.projection.js';

@Module({
  imports: [
    TypeOrmModule.forRoot(databaseOptions('billing.sqlite')),
    TypeOrmModule.forFeature([Customer, AuditEntry]),
    SyncModule.forRoot({
      service: 'billing',
      url: config.amqpUrl,
      exchange: config.exchange,
      // Module-wide default; AuditTrail sets its own. Short first delays suit a demo.
      retry: { attempts: 5, delays: ['250ms', '1s', '10s'] },
    }),
  ],
  controllers: [BillingController],
  providers: [CustomerProjection, AuditTrail],
})
export class AppModule {}
