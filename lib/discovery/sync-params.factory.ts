import type { ParamData } from '@nestjs/common';
import type { ParamsFactory } from '@nestjs/core';

/** Nest's RPC param types: `@Payload()` is 3, `@Ctx()` is 6 (RpcParamtype in @nestjs/microservices). */
const PAYLOAD = 3;
const CONTEXT = 6;

/** Lets `@Payload()` (with pipes) and `@Ctx()` work on @OnEvent handlers, whose args are (data, ctx). */
export class SyncParamsFactory implements ParamsFactory {
  exchangeKeyForValue(type: number, data: ParamData, args: unknown[]): unknown {
    if (!args) return null;
    if (type === PAYLOAD) {
      const payload = args[0] as Record<string, unknown> | undefined;
      return typeof data === 'string' && payload ? payload[data] : payload;
    }
    if (type === CONTEXT) return args[1];
    return null;
  }
}
