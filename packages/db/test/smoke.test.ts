import { createTestDatabase, type TestDatabase } from '@usagekit/testing';
import { createPrismaClient } from '../src/index.js';

let database: TestDatabase;
beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(() => database.drop());

test('smoke', async () => {
  const prisma = createPrismaClient({ databaseUrl: database.databaseUrl });
  const rows = await prisma.$queryRaw<{ n: bigint }[]>`SELECT count(*) AS n FROM boundary_usage_stats`;
  expect(rows[0]!.n).toBe(0n);
  await prisma.$disconnect();
});
