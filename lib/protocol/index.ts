// The daemon protocol: newline-delimited JSON requests and replies.
export * from './fields.js';
export * from './limits.js';
export * from './reply.js';
export * from './request.js';
export * from './line-reader.js';
export * from './results.js';
export * from './device-requests.js';
export * from './instance-requests.js';
