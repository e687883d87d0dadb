import { Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { SyncModule } from 'nestjs-event-sync';
import { config, databaseOptions } from './config.js';
import { User } from './user.entity.js';
import { UsersController } from './users.controller.js';
import { UsersService } from './users.service.js';

@Module({
  imports: [
    TypeOrmModule.forRoot(databaseOptions('users.sqlite')),
    TypeOrmModule.forFeature([User]),
    SyncModule.forRoot({ service: 'users', url: config.amqpUrl, exchange: config.exchange }),
  ],
  controllers: [UsersController],
  providers: [UsersService],
})
export class AppModule {}
