import { Client } from 'pg';
import {
  createTestDatabase,
  startFreezingProxy,
  type FreezingProxy,
  type TestDatabase,
} from '../src/index.js';

// The freezing proxy is what the field-reliability tests stand on: a frozen connection must
// stay open and silent (no error, no close), and new connections must work while only the
// existing ones are frozen.

let database: TestDatabase;
let proxy: FreezingProxy;
const clients: Client[] = [];

beforeAll(async () => {
  database = await createTestDatabase();
  proxy = await startFreezingProxy(database.databaseUrl);
});

afterAll(async () => {
  for (const client of clients) client.end().catch(() => undefined);
  await proxy?.close();
  await database?.drop();
});

async function connect(): Promise<Client> {
  const client = new Client({
    connectionString: proxy.databaseUrl,
    connectionTimeoutMillis: 5_000,
  });
  client.on('error', () => undefined);
  clients.push(client);
  await client.connect();
  return client;
}

function settlesWithin<T>(promise: Promise<T>, ms: number): Promise<'settled' | 'pending'> {
  return Promise.race([
    promise.then(
      () => 'settled' as const,
      () => 'settled' as const,
    ),
    new Promise<'pending'>((resolve) => setTimeout(() => resolve('pending'), ms)),
  ]);
}

test('a frozen connection stays silent while new connections work, and thaw ends it', async () => {
  const old = await connect();
  await expect(old.query('SELECT 1 AS one')).resolves.toMatchObject({ rows: [{ one: 1 }] });

  proxy.freeze();
  const stuck = old.query('SELECT 2 AS two');
  expect(await settlesWithin(stuck, 500)).toBe('pending');

  const fresh = await connect();
  await expect(fresh.query('SELECT 3 AS three')).resolves.toMatchObject({ rows: [{ three: 3 }] });

  proxy.thaw();
  await expect(stuck).rejects.toThrow();
  await fresh.end();
});

test('freezing new connections too makes a connect hang until its own timeout', async () => {
  proxy.freeze({ newConnections: true });
  const client = new Client({ connectionString: proxy.databaseUrl, connectionTimeoutMillis: 300 });
  client.on('error', () => undefined);
  await expect(client.connect()).rejects.toThrow(/timeout/i);
  proxy.thaw();
  const after = await connect();
  await expect(after.query('SELECT 4 AS four')).resolves.toMatchObject({ rows: [{ four: 4 }] });
  await after.end();
});

test('resumeFrozen delivers what was held', async () => {
  const client = await connect();
  proxy.freeze();
  const held = client.query('SELECT 5 AS five');
  expect(await settlesWithin(held, 300)).toBe('pending');
  proxy.thaw({ resumeFrozen: true });
  await expect(held).resolves.toMatchObject({ rows: [{ five: 5 }] });
  await client.end();
});

test('dropCloses: a polite close is swallowed too; the server keeps the backend until the partition ends', async () => {
  const client = await connect();
  const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
  const pid = rows[0]!.pid;
  const backendAlive = async () => {
    const admin = new Client({ connectionString: database.databaseUrl });
    await admin.connect();
    try {
      const result = await admin.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pid]);
      return result.rows.length === 1;
    } finally {
      await admin.end();
    }
  };
  proxy.freeze({ dropCloses: true });
  // Terminate and FIN go out; no FIN comes back, so end() waits (half-closed).
  const ending = client.end();
  expect(await settlesWithin(ending, 500)).toBe('pending');
  expect(await backendAlive()).toBe(true);
  proxy.thaw();
  await ending;
  const deadline = Date.now() + 5_000;
  while ((await backendAlive()) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  expect(await backendAlive()).toBe(false);
});

test('without dropCloses, a close of a frozen connection is passed on', async () => {
  const client = await connect();
  await client.query('SELECT 1');
  proxy.freeze();
  // The proxy closes the server side, the server's FIN comes back: end() completes.
  await client.end();
  proxy.thaw();
});
