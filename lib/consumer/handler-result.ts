import { isObservable, lastValueFrom } from 'rxjs';

/**
 * A Nest-wrapped handler may return an Observable (from an interceptor, or an exception
 * filter's `throwError`): wait for it, so its error fails the run like a thrown one.
 */
export async function settleHandlerResult(result: unknown): Promise<unknown> {
  const value = await result;
  return isObservable(value) ? lastValueFrom(value, { defaultValue: undefined }) : value;
}
