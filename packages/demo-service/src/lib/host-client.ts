import { PrismaPg } from '@prisma/adapter-pg';
import { PrismaClient } from '../generated/prisma/client.js';

export type HostPrismaClient = PrismaClient;

/**
 * The service's own client, for its own tables: a plain PrismaClient over adapter-pg with the
 * service's own bounds. Deliberately not createPrismaClient from @usagekit/db: that one is
 * usagekit's, with usagekit's session settings (lock_timeout, idle-in-transaction timeout),
 * statement deadline and prepared statements, which the service's queries must not inherit.
 */
export function createHostClient(databaseUrl: string): HostPrismaClient {
  const adapter = new PrismaPg({
    connectionString: databaseUrl,
    max: 5,
    connectionTimeoutMillis: 5_000,
    // Client-side bound on every query of ours: a silent connection cannot hang a request.
    query_timeout: 10_000,
  });
  return new PrismaClient({ adapter });
}

/** `$disconnect()`, given at most `timeoutMs`; a stuck pool is left behind (the process exits). */
export async function disconnectHostClient(
  client: HostPrismaClient,
  timeoutMs: number,
): Promise<'disconnected' | 'abandoned'> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'abandoned'>((resolve) => {
    timer = setTimeout(() => resolve('abandoned'), Math.max(0, timeoutMs));
  });
  const done = client.$disconnect().then(
    () => 'disconnected' as const,
    () => 'disconnected' as const,
  );
  try {
    return await Promise.race([done, timedOut]);
  } finally {
    clearTimeout(timer);
  }
}
