import { ConfigError, readConfig } from './lib/config.js';
import { jsonLogger } from './lib/json-logger.js';
import { startDemoService } from './lib/service.js';

/**
 * The process: reads the environment, starts the service, and on SIGTERM or SIGINT shuts down
 * within SHUTDOWN_BUDGET_MS, prints what happened to the usage as one JSON line, and exits.
 * Run it as the container's process itself (`node packages/demo-service/dist/main.js`, or
 * bin/demo-service.js in the workspace): npm and nx do not pass SIGTERM on to it.
 */
export async function main(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const logger = jsonLogger(process.stderr);
  let config;
  try {
    config = readConfig(env);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`demo-service: ${error.message}\n`);
    process.exit(1);
  }
  const service = await startDemoService(config, logger);
  line({ event: 'listening', port: service.port, replicaId: config.replicaId, pid: process.pid });

  const onSignal = (signal: NodeJS.Signals) => {
    line({ event: 'stopping', signal });
    service.shutdown().then(
      (report) => {
        line({ event: 'stopped', ...report, usage: report.usage.toJSON() });
        const inMemory = report.usage.inMemory;
        process.exit(inMemory.allowedRequests + inMemory.deniedRequests > 0n ? 1 : 0);
      },
      (error: unknown) => {
        logger.error('shutdown failed', { error: (error as Error).message });
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
}

function line(event: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

if (require.main === module) {
  main().catch((error: unknown) => {
    process.stderr.write(`demo-service: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  });
}
