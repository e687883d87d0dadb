import { Injectable } from '@nestjs/common';
import { ROUTE_ARGS_METADATA } from '@nestjs/common/constants';
import { DiscoveryService, MetadataScanner } from '@nestjs/core';
import { ExternalContextCreator } from '@nestjs/core';
import type { InstanceWrapper } from '@nestjs/core/injector/instance-wrapper';
import type { ConsumerDefinition, EventHandler } from '../consumer/consumer-definition.js';
import { settleHandlerResult } from '../consumer/handler-result.js';
import { bindPublisher } from '../decorators/publishes-event.decorator.js';
import { UnsupportedHandlerScopeError } from '../errors/unsupported-handler-scope.error.js';
import type { ResolvedSyncOptions } from '../interfaces/sync-module-options.interface.js';
import { resolveHandlerTimeout } from '../options/resolve-options.js';
import { resolveRetryPolicy } from '../options/retry-policy.js';
import { SyncPublisher } from '../publisher/sync.publisher.js';
import { DEFAULT_CONCURRENCY } from '../sync.constants.js';
import { SyncMetadataAccessor } from './sync-metadata.accessor.js';
import { SyncParamsFactory } from './sync-params.factory.js';

/**
 * Finds `@OnEvent` handlers and `@PublishesEvent` methods at bootstrap. Handlers are wrapped
 * with Nest's ExternalContextCreator in the `rpc` context, so guards, interceptors, pipes
 * (`@Payload()`), and exception filters apply to them as to any microservice handler.
 */
@Injectable()
export class SyncExplorer {
  private readonly paramsFactory = new SyncParamsFactory();

  constructor(
    private readonly discovery: DiscoveryService,
    private readonly scanner: MetadataScanner,
    private readonly metadata: SyncMetadataAccessor,
    private readonly contextCreator: ExternalContextCreator,
    private readonly publisher: SyncPublisher,
  ) {}

  /** Every @OnEvent handler as a consumer definition. Throws on request-scoped handler classes. */
  handlers(options: ResolvedSyncOptions): ConsumerDefinition[] {
    const definitions: ConsumerDefinition[] = [];
    for (const wrapper of this.wrappers()) {
      const prototype = (wrapper.instance ? Object.getPrototypeOf(wrapper.instance) : wrapper.metatype?.prototype) as object | undefined;
      if (!prototype) continue;
      for (const methodName of this.scanner.getAllMethodNames(prototype)) {
        const method = (prototype as Record<string, unknown>)[methodName];
        if (typeof method !== 'function') continue;
        const onEvent = this.metadata.onEvent(method);
        if (!onEvent) continue;
        const className = (wrapper.metatype as Function | undefined)?.name ?? wrapper.name;
        const label = `${className}.${methodName}`;
        if (!wrapper.isDependencyTreeStatic() || !wrapper.instance) throw new UnsupportedHandlerScopeError(label);
        const consumer = onEvent.options.consumer ?? label;
        definitions.push({
          consumer,
          queue: `${options.service}.${consumer}`,
          eventTypes: onEvent.eventTypes,
          retry: onEvent.options.retry === undefined ? options.retry : resolveRetryPolicy(onEvent.options.retry, `${label} retry`),
          concurrency: onEvent.options.concurrency ?? DEFAULT_CONCURRENCY,
          batchSize: onEvent.options.partitions ? 1 : (onEvent.options.batchSize ?? options.batchSize),
          parallel: onEvent.options.parallel ?? false,
          partitions: onEvent.options.partitions,
          ordering: onEvent.options.ordering,
          handlerTimeoutMs: resolveHandlerTimeout(onEvent.options.handlerTimeout, `${label} handlerTimeout`, options.handlerTimeoutMs),
          label,
          handler: this.wrap(wrapper.instance as object, methodName),
        });
      }
    }
    return definitions;
  }

  /** Binds every singleton that has @PublishesEvent methods to this application's publisher. */
  bindPublishers(): void {
    for (const wrapper of this.wrappers()) {
      const instance = wrapper.instance as object | undefined;
      if (!instance || !wrapper.isDependencyTreeStatic()) continue;
      const prototype = Object.getPrototypeOf(instance) as object | null;
      if (!prototype) continue;
      const publishes = this.scanner
        .getAllMethodNames(prototype)
        .some((name) => typeof (prototype as Record<string, unknown>)[name] === 'function' && this.metadata.publishesEvent((prototype as Record<string, Function>)[name]));
      if (publishes) bindPublisher(instance, this.publisher);
    }
  }

  private wrappers(): InstanceWrapper[] {
    return [...this.discovery.getProviders(), ...this.discovery.getControllers()].filter((wrapper) => wrapper.metatype && !wrapper.isAlias);
  }

  private wrap(instance: object, methodName: string): EventHandler {
    const callback = (instance as Record<string, (...args: unknown[]) => unknown>)[methodName];
    const handler = this.contextCreator.create(instance as never, callback, methodName, ROUTE_ARGS_METADATA, this.paramsFactory, undefined, undefined, undefined, 'rpc');
    return (data, context) => settleHandlerResult(handler(data, context));
  }
}
