import { randomUUID } from 'node:crypto';
import { Injectable, NotFoundException } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { PublishesEvent, SyncPublisher } from 'nestjs-event-sync';
import type { EntityManager, Repository } from 'typeorm';
import { User } from './user.entity.js';

export interface CreateUserDto {
  name: string;
  email: string;
}

export type UpdateUserDto = Partial<CreateUserDto>;

/**
 * Every change and its event commit together: the user row and the UserCreated / UserUpdated
 * row in sync_outbox are written in one transaction, and the outbox relay publishes the event
 * right after the commit. A crash or a broker outage between the two can no longer lose it.
 */
@Injectable()
export class UsersService {
  constructor(
    @InjectRepository(User) private readonly users: Repository<User>,
    private readonly sync: SyncPublisher,
  ) {}

  create(dto: CreateUserDto): Promise<User> {
    return this.sync.transaction((manager) => this.insert(manager, dto));
  }

  update(id: string, dto: UpdateUserDto): Promise<User> {
    return this.sync.transaction((manager) => this.change(manager, id, dto));
  }

  async find(id: string): Promise<User> {
    const user = await this.users.findOneBy({ id });
    if (!user) throw new NotFoundException(`User ${id} does not exist`);
    return user;
  }

  /** Called inside the transaction: the event goes to the outbox with the row. */
  @PublishesEvent('UserCreated', { key: (user: User) => user.id })
  async insert(manager: EntityManager, dto: CreateUserDto): Promise<User> {
    return manager.save(manager.create(User, { id: randomUUID(), name: dto.name, email: dto.email }));
  }

  @PublishesEvent('UserUpdated', { key: (user: User) => user.id })
  async change(manager: EntityManager, id: string, dto: UpdateUserDto): Promise<User> {
    const user = await manager.findOneBy(User, { id });
    if (!user) throw new NotFoundException(`User ${id} does not exist`);
    Object.assign(user, dto.name === undefined ? {} : { name: dto.name }, dto.email === undefined ? {} : { email: dto.email });
    return manager.save(user);
  }
}
