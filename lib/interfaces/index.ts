export * from './on-event-options.interface.js';
export * from './publish-options.interface.js';
export * from './publishes-event-options.interface.js';
export * from './retry-options.interface.js';
export * from './sync-event.interface.js';
export * from './sync-module-options.interface.js';
