export { useDatabase } from './lib/use-database.js';
export type { SuiteDatabase } from './lib/use-database.js';
