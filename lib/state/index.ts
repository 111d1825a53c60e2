export * from './state-data.js';
export * from './state-file.js';
export * from './snapshot.js';
export * from './restore.js';
export * from './open-backing.js';
