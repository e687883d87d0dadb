/** A promise the test settles itself: lets a handler block until the test releases it. */
export interface Deferred<T = void> {
  promise: Promise<T>;
  resolve(value: T): void;
  settled: boolean;
}

export function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((done) => (resolve = done));
  const handle: Deferred<T> = {
    promise,
    settled: false,
    resolve(value) {
      handle.settled = true;
      resolve(value);
    },
  };
  return handle;
}

/** Whether a promise has settled yet, without waiting for it. */
export function track<T>(promise: Promise<T>): { promise: Promise<T>; readonly settled: boolean } {
  const state = { promise, settled: false };
  promise.then(
    () => (state.settled = true),
    () => (state.settled = true),
  );
  return state;
}
