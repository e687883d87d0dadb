import { randomUUID } from 'node:crypto';
import { Injectable, NotFoundException } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { PublishesEvent } from 'nestjs-event-sync';
import type { Repository } from 'typeorm';
import { User } from './user.entity.js';

export interface CreateUserDto {
  name: string;
  email: string;
}

export type UpdateUserDto = Partial<CreateUserDto>;

@Injectable()
export class UsersService {
  constructor(@InjectRepository(User) private readonly users: Repository<User>) {}

  /** Resolves once the row is stored and the broker has confirmed UserCreated. */
  @PublishesEvent('UserCreated', { key: (user: User) => user.id })
  async create(dto: CreateUserDto): Promise<User> {
    return this.users.save(this.users.create({ id: randomUUID(), name: dto.name, email: dto.email }));
  }

  @PublishesEvent('UserUpdated', { key: (user: User) => user.id })
  async update(id: string, dto: UpdateUserDto): Promise<User> {
    const user = await this.find(id);
    Object.assign(user, dto.name === undefined ? {} : { name: dto.name }, dto.email === undefined ? {} : { email: dto.email });
    return this.users.save(user);
  }

  async find(id: string): Promise<User> {
    const user = await this.users.findOneBy({ id });
    if (!user) throw new NotFoundException(`User ${id} does not exist`);
    return user;
  }
}
