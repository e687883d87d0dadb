/** A SyncModule option is missing or wrong. The message names the option and the fix. */
export class InvalidSyncOptionsError extends Error {
  constructor(
    readonly option: string,
    readonly problem: string,
    readonly fix: string,
  ) {
    super(`SyncModule option \`${option}\` ${problem}. ${fix}`);
    this.name = 'InvalidSyncOptionsError';
  }
}
