import { defineConfig } from 'prisma/config';

// Prisma 7 CLI configuration. The URL is read only here, at the edge; library code never
// reads the environment. `prisma generate` needs no database, so a placeholder keeps it
// working on a machine with no DATABASE_URL.
export default defineConfig({
  schema: 'prisma/schema.prisma',
  migrations: { path: 'prisma/migrations' },
  datasource: {
    url: process.env.DIRECT_URL ?? process.env.DATABASE_URL ?? 'postgresql://localhost:5432/usagekit',
  },
});
