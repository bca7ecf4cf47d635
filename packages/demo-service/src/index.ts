export { startDemoService } from './lib/service.js';
export type { DemoService, ShutdownReport } from './lib/service.js';
export { readConfig, ConfigError } from './lib/config.js';
export type { DemoServiceConfig } from './lib/config.js';
export { main } from './main.js';
