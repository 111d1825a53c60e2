export { createDevice, Device, type DeviceInfo, type DeviceStats } from './device.js';
export { checkOptions, DEFAULTS, type DeviceOptions, type BlockSize, type Scheduler } from './device-options.js';
export { UbloopError, isSystemError, type SystemError } from './errors.js';
export { kernelFeatures, type KernelFeatures } from './kernel.js';
export { parseSize, formatSize } from './size.js';
