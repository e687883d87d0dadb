import type { INestApplicationContext } from '@nestjs/common';

/** The graceful stop of a test's child process: SIGTERM closes the app and exits 0; a failed close is printed and exits 1. */
export function closeOnSigterm(app: INestApplicationContext): void {
  process.once('SIGTERM', () => {
    app.close().then(
      () => process.exit(0),
      (error: Error) => {
        console.error(`close failed: ${error.stack}`);
        process.exit(1);
      },
    );
  });
}
