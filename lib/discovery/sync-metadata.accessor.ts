import { Injectable } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import type { OnEventMetadata } from '../interfaces/on-event-options.interface.js';
import type { PublishesEventMetadata } from '../interfaces/publishes-event-options.interface.js';
import { ON_EVENT_METADATA, PUBLISHES_EVENT_METADATA } from '../sync.constants.js';

@Injectable()
export class SyncMetadataAccessor {
  constructor(private readonly reflector: Reflector) {}

  onEvent(method: Function): OnEventMetadata | undefined {
    return this.reflector.get(ON_EVENT_METADATA, method);
  }

  publishesEvent(method: Function): PublishesEventMetadata | undefined {
    return this.reflector.get(PUBLISHES_EVENT_METADATA, method);
  }
}
