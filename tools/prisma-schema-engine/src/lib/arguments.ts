import type { DatasourceUrls } from './engine-session.js';

/**
 * The native engine's command line, as Prisma 7.10's CLI builds it (SchemaEngineCLI: one
 * `--datamodels <path>` per schema file, `--datasource <json>`, `--enabled-preview-features`,
 * `--extension-types`; the one-shot form `--datasource <json> cli <command>`).
 */
export type EngineInvocation =
  | { kind: 'version' }
  | { kind: 'help' }
  | { kind: 'server'; datamodelPaths: string[]; datasource: DatasourceUrls }
  | { kind: 'cli'; command: CliCommand; datasource: DatasourceUrls };

export type CliCommand = 'can-connect-to-database' | 'create-database' | 'drop-database';

const CLI_COMMANDS: readonly string[] = [
  'can-connect-to-database',
  'create-database',
  'drop-database',
];

export class ArgumentError extends Error {}

export function parseArguments(argv: readonly string[]): EngineInvocation {
  const datamodelPaths: string[] = [];
  let datasource: DatasourceUrls = {};
  for (let index = 0; index < argv.length; index++) {
    const argument = argv[index] as string;
    const value = () => {
      const next = argv[++index];
      if (next === undefined) throw new ArgumentError(`${argument} needs a value`);
      return next;
    };
    switch (argument) {
      case '--version':
      case '-V':
        return { kind: 'version' };
      case '--help':
      case '-h':
        return { kind: 'help' };
      case '--datamodels':
      case '-d':
        datamodelPaths.push(value());
        break;
      case '--datasource':
        datasource = parseDatasource(value());
        break;
      // Accepted and ignored: the wasm build has no preview-feature flags or extensions.
      case '--enabled-preview-features':
      case '--extension-types':
        value();
        break;
      case 'cli': {
        const command = argv[index + 1];
        if (!command || !CLI_COMMANDS.includes(command)) {
          throw new ArgumentError(`cli needs one of: ${CLI_COMMANDS.join(', ')}`);
        }
        return { kind: 'cli', command: command as CliCommand, datasource };
      }
      default:
        throw new ArgumentError(`unknown argument ${argument}`);
    }
  }
  return { kind: 'server', datamodelPaths, datasource };
}

function parseDatasource(json: string): DatasourceUrls {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch (cause) {
    throw new ArgumentError(`--datasource is not JSON: ${(cause as Error).message}`);
  }
  const { url, shadowDatabaseUrl } = (parsed ?? {}) as Record<string, unknown>;
  return {
    url: typeof url === 'string' && url !== '' ? url : undefined,
    shadowDatabaseUrl:
      typeof shadowDatabaseUrl === 'string' && shadowDatabaseUrl !== ''
        ? shadowDatabaseUrl
        : undefined,
  };
}
