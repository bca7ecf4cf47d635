import { join } from 'node:path';

/**
 * bin/run.js: the file every simulator process starts from. The replica and keeper processes
 * are forked from it with their role as the first argument, so they load the same TypeScript
 * loader as the CLI, also when the parent runs inside Jest.
 */
export const RUN_SCRIPT = join(__dirname, '..', '..', 'bin', 'run.js');

export const REPLICA_ROLE = '__replica';
export const POSTGRES_KEEPER_ROLE = '__postgres-keeper';
