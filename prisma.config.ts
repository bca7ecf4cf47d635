import { defineConfig } from 'prisma/config';

// Prisma 7 CLI configuration. The URL is read only here, at the edge; library code never
// reads the environment. `prisma generate` needs no database, so a placeholder keeps it
// working on a machine with no DATABASE_URL.
//
// usagekit's tables and its _prisma_migrations live in a schema of their own (default
// `usagekit`, the one migrate() uses): a URL without `?schema=` gets `schema=usagekit` here,
// so `prisma migrate deploy|status|diff` in this repository never touch `public`.
function withUsagekitSchema(url: string): string {
  try {
    const parsed = new URL(url);
    if (!parsed.searchParams.has('schema')) parsed.searchParams.set('schema', 'usagekit');
    return parsed.toString();
  } catch {
    return url;
  }
}

export default defineConfig({
  schema: 'prisma/schema.prisma',
  migrations: { path: 'prisma/migrations' },
  datasource: {
    url: withUsagekitSchema(
      process.env.DIRECT_URL ?? process.env.DATABASE_URL ?? 'postgresql://localhost:5432/usagekit',
    ),
  },
});
