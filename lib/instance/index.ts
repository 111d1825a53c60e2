export * from './caller.js';
export * from './device-factory.js';
export * from './index-table.js';
export * from './bindings.js';
export * from './instance.js';
export * from './loop-ctl.js';
export * from './manager.js';
export * from './limits.js';
