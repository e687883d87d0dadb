/** Bootstrap could not connect to the broker: not reachable within `startupTimeout`, or the connection was refused. */
export class BrokerUnavailableError extends Error {
  constructor(url: string, timeoutMs: number, cause?: unknown) {
    const reason = cause instanceof Error ? cause.message : undefined;
    super(
      reason === undefined || /timeout/i.test(reason)
        ? `RabbitMQ at ${url} was not reachable within ${timeoutMs} ms (startupTimeout). ` +
            `Start it (for example \`rabbitmq-server -detached\`) or fix the \`url\` option.`
        : `RabbitMQ at ${url} refused the connection (${reason}). ` +
            'Check the user name, password and vhost in the `url` option (and the `tls` options for amqps://).',
      { cause },
    );
    this.name = 'BrokerUnavailableError';
  }
}
