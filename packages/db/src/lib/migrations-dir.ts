import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

/**
 * Finds the workspace's `prisma/migrations` by walking up from this file, so it works from
 * `src/` (Jest, the simulator in development) and from `dist/` alike.
 */
export function defaultMigrationsDir(): string {
  let dir = __dirname;
  for (;;) {
    const candidate = join(dir, 'prisma', 'migrations');
    if (existsSync(join(candidate, 'migration_lock.toml'))) return candidate;
    const parent = dirname(dir);
    if (parent === dir) {
      throw new Error(
        `migrate: could not find prisma/migrations above ${resolve(__dirname)}; pass migrationsDir`,
      );
    }
    dir = parent;
  }
}
