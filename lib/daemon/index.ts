export { Daemon, type DaemonOptions } from './daemon.js';
export { DaemonClient } from './client.js';
export * from './paths.js';
