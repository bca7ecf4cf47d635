export { useDatabase } from './lib/use-database.js';
export type { SuiteDatabase } from './lib/use-database.js';
export { usePgBouncer } from './lib/use-pgbouncer.js';
export type { SuitePgBouncer } from './lib/use-pgbouncer.js';
