/**
 * What every source of a test server returns. Its own module, so that server.ts (which picks
 * a source) and container.ts / embedded.ts (the sources) import it without importing each
 * other in a circle.
 */
export interface PostgresServer {
  /** A superuser URL on the server's `postgres` database. */
  url: string;
  source: 'TEST_DATABASE_URL' | 'testcontainers' | 'embedded';
  /** Why this source was chosen, for the one line we print. */
  reason: string;
  stop(): Promise<void>;
}
