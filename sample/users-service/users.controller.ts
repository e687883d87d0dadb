import { BadRequestException, Body, Controller, Get, HttpCode, Param, Patch, Post } from '@nestjs/common';
import { type CreateUserDto, type UpdateUserDto, UsersService } from './users.service.js';

@Controller()
export class UsersController {
  constructor(private readonly users: UsersService) {}

  @Get('health')
  health() {
    return { status: 'ok', service: 'users', pid: process.pid };
  }

  @Post('users')
  create(@Body() body: Partial<CreateUserDto>) {
    return this.users.create({ name: requireText(body, 'name'), email: requireText(body, 'email') });
  }

  @Patch('users/:id')
  @HttpCode(200)
  update(@Param('id') id: string, @Body() body: UpdateUserDto) {
    return this.users.update(id, {
      name: body.name === undefined ? undefined : requireText(body, 'name'),
      email: body.email === undefined ? undefined : requireText(body, 'email'),
    });
  }

  @Get('users/:id')
  find(@Param('id') id: string) {
    return this.users.find(id);
  }
}

function requireText(body: Record<string, unknown> | undefined, field: string): string {
  const value = body?.[field];
  if (typeof value !== 'string' || value.trim() === '') throw new BadRequestException(`${field} must be a non-empty string`);
  return value.trim();
}
