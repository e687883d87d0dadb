/** @OnEvent handlers live as long as the queue consumer: request- or transient-scoped classes cannot. */
export class UnsupportedHandlerScopeError extends Error {
  constructor(readonly handler: string) {
    super(
      `${handler} is decorated with @OnEvent but its class is request- or transient-scoped ` +
        `(or depends on a request-scoped provider). Event handlers must be singletons: ` +
        `remove the scope, and read per-event data from the EventContext argument instead.`,
    );
    this.name = 'UnsupportedHandlerScopeError';
  }
}
