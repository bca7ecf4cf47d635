import { randomUUID } from 'node:crypto';

/** Everything the service reads from its environment, parsed once at the edge (main.ts). */
export interface DemoServiceConfig {
  /** The one database: the service's own tables in `public`, usagekit's in `usagekitSchema`. */
  databaseUrl: string;
  host: string;
  /** 0 picks a free port (tests); the chosen one is printed in the `listening` line. */
  port: number;
  /** The telemetry receiver that gets one report per period. */
  telemetryUrl: string;
  deploymentId: string;
  /** A uuid, random per process start unless given (the safe default: never shared). */
  replicaId: string;
  usagekitSchema: string;
  flushIntervalMs: number;
  snapshotFrequencyMs: number;
  /** Whole-shutdown budget: draining HTTP, usagekit's stop, the host client's disconnect. */
  shutdownBudgetMs: number;
  /** Set on the last replica standing (scale to zero): collect and deliver at shutdown. */
  finalCollection: boolean;
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  readonly code = 'CONFIG';
}

export function readConfig(env: NodeJS.ProcessEnv): DemoServiceConfig {
  const required = (name: string): string => {
    const value = env[name];
    if (!value) throw new ConfigError(`${name} is required`);
    return value;
  };
  return {
    databaseUrl: required('DATABASE_URL'),
    host: env['HOST'] ?? '0.0.0.0',
    port: integer(env, 'PORT', 8080, 0),
    telemetryUrl: required('TELEMETRY_URL'),
    deploymentId: env['DEPLOYMENT_ID'] ?? 'demo-service',
    replicaId: env['REPLICA_ID'] ?? randomUUID(),
    usagekitSchema: env['USAGEKIT_SCHEMA'] ?? 'usagekit',
    flushIntervalMs: integer(env, 'FLUSH_INTERVAL_MS', 60_000, 1),
    snapshotFrequencyMs: integer(env, 'SNAPSHOT_FREQUENCY_MS', 30 * 60_000, 1),
    // Kubernetes sends SIGKILL 30 s after SIGTERM by default: 25 s leaves margin.
    shutdownBudgetMs: integer(env, 'SHUTDOWN_BUDGET_MS', 25_000, 1),
    finalCollection: env['FINAL_COLLECTION'] === 'true' || env['FINAL_COLLECTION'] === '1',
  };
}

function integer(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < min) {
    throw new ConfigError(`${name} must be an integer ≥ ${min}, got "${raw}"`);
  }
  return value;
}
