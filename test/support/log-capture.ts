import type { LoggerService } from '@nestjs/common';

/** A Nest logger that keeps every line (all levels) for assertions, e.g. `capture.lines.some(...)`. */
export class LogCapture implements LoggerService {
  readonly lines: string[] = [];

  log(message: unknown, ...rest: unknown[]): void {
    this.keep('log', message, rest);
  }
  error(message: unknown, ...rest: unknown[]): void {
    this.keep('error', message, rest);
  }
  warn(message: unknown, ...rest: unknown[]): void {
    this.keep('warn', message, rest);
  }
  debug(message: unknown, ...rest: unknown[]): void {
    this.keep('debug', message, rest);
  }
  verbose(message: unknown, ...rest: unknown[]): void {
    this.keep('verbose', message, rest);
  }

  /** Lines that match `pattern`. */
  matching(pattern: RegExp): string[] {
    return this.lines.filter((line) => pattern.test(line));
  }

  private keep(level: string, message: unknown, rest: unknown[]): void {
    const text = (value: unknown) => (value instanceof Error ? `${value.name}: ${value.message}\n${value.stack ?? ''}` : typeof value === 'string' ? value : JSON.stringify(value));
    this.lines.push([level, text(message), ...rest.map(text)].join(' '));
  }
}
