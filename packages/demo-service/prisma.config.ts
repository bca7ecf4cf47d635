import { defineConfig } from 'prisma/config';

// The demo service's Prisma CLI configuration: its own schema and migrations, applied with the
// real `prisma migrate deploy` (nx run @usagekit/demo-service:migrate). The URL has no
// `?schema=`, so its tables and its _prisma_migrations live in `public`, the host's schema;
// usagekit's are in `usagekit` (`usagekit migrate`). `generate` needs no database: the
// placeholder keeps it working without DATABASE_URL.
export default defineConfig({
  schema: 'prisma/schema.prisma',
  migrations: { path: 'prisma/migrations' },
  datasource: { url: process.env.DATABASE_URL ?? 'postgresql://localhost:5432/demo' },
});
