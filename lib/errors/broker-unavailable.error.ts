/** The broker could not be reached within `startupTimeout`. */
export class BrokerUnavailableError extends Error {
  constructor(url: string, timeoutMs: number, cause?: unknown) {
    super(
      `RabbitMQ at ${url} was not reachable within ${timeoutMs} ms (startupTimeout). ` +
        `Start it (for example \`rabbitmq-server -detached\`) or fix the \`url\` option.`,
      { cause },
    );
    this.name = 'BrokerUnavailableError';
  }
}
