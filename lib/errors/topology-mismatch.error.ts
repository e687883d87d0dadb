/** A queue or exchange already exists on the broker with arguments other than the ones we declare. */
export class TopologyMismatchError extends Error {
  constructor(
    readonly kind: 'queue' | 'exchange',
    readonly entity: string,
    readonly argument: string,
    brokerMessage: string,
  ) {
    super(
      `The ${kind} "${entity}" already exists with a different "${argument}" than this service declares ` +
        `(${brokerMessage}). RabbitMQ cannot change the arguments of an existing ${kind}: either set the ` +
        `option back to what the ${kind} was created with, or drain and delete the ${kind} ` +
        `(rabbitmqctl delete_${kind === 'queue' ? 'queue' : 'exchange'} ${entity}) and restart so it is declared anew.`,
    );
    this.name = 'TopologyMismatchError';
  }
}
