import { createServer, type Server } from 'node:net';
import { randomUUID } from 'node:crypto';
import type { Logger } from '@usagekit/db';
import { createTestDatabase, waitUntil, type TestDatabase } from '@usagekit/testing';
import { Client } from 'pg';
import { startDemoService } from '../src/lib/service.js';

// The port is taken (EADDRINUSE): startDemoService rejects, and what it started before the
// listen (usagekit's runtime, the host client) is stopped, not left running in the caller.
let database: TestDatabase;
let occupier: Server;

beforeAll(async () => {
  database = await createTestDatabase();
  occupier = createServer();
  await new Promise<void>((resolve) => occupier.listen(0, '127.0.0.1', resolve));
});

afterAll(async () => {
  await new Promise((resolve) => occupier?.close(resolve));
  await database?.drop();
});

test('a port already in use: startDemoService rejects with EADDRINUSE and stops the runtime and host client it started', async () => {
  const lines: string[] = [];
  const record = (message: string) => lines.push(message);
  const logger: Logger = { debug: record, info: record, warn: record, error: record };
  const { port } = occupier.address() as { port: number };

  const started = startDemoService(
    {
      databaseUrl: database.databaseUrl,
      host: '127.0.0.1',
      port,
      telemetryUrl: 'http://127.0.0.1:9/never',
      deploymentId: randomUUID(),
      replicaId: randomUUID(),
      usagekitSchema: 'usagekit',
      flushIntervalMs: 200,
      snapshotFrequencyMs: 3_600_000,
      shutdownBudgetMs: 5_000,
      finalCollection: false,
    },
    logger,
  );
  await expect(started).rejects.toMatchObject({ code: 'EADDRINUSE' });
  // The runtime was stopped (its stop() logs this line) before the rejection.
  expect(lines).toContain('usagekit runtime stopped');
  // And no connection of the service's is left open on its database.
  const admin = new Client({ connectionString: database.databaseUrl });
  await admin.connect();
  try {
    await waitUntil(
      async () => {
        const { rows } = await admin.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_activity
            WHERE datname = current_database() AND pid <> pg_backend_pid()`,
        );
        return rows[0]!.n === 0;
      },
      'the service closed its connections',
      5_000,
    );
  } finally {
    await admin.end();
  }
});
