export * from './schema.js';
export * from './migrate.js';
export * from './state-data.js';
export * from './state-file.js';
export * from './state-writer.js';
export * from './snapshot.js';
export * from './restore.js';
export * from './open-backing.js';
