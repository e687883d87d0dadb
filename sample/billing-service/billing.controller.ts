import { Controller, Get } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { SyncMetrics } from 'nestjs-event-sync';
import type { Repository } from 'typeorm';
import { AuditEntry } from './audit-entry.entity.js';
import { Customer } from './customer.entity.js';

@Controller()
export class BillingController {
  constructor(
    @InjectRepository(Customer) private readonly customers: Repository<Customer>,
    @InjectRepository(AuditEntry) private readonly auditEntries: Repository<AuditEntry>,
    private readonly metrics: SyncMetrics,
  ) {}

  /** Liveness plus what happened to events in this process (handled, retried, deadLettered, …). */
  @Get('health')
  health() {
    return { status: 'ok', service: 'billing', pid: process.pid, sync: this.metrics.snapshot() };
  }

  @Get('customers')
  listCustomers() {
    return this.customers.find({ order: { name: 'ASC' } });
  }

  @Get('audit-entries')
  listAuditEntries() {
    return this.auditEntries.find({ order: { id: 'ASC' } });
  }
}
