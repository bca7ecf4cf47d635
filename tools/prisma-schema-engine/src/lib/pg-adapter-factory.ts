import { randomUUID } from 'node:crypto';
import { PrismaPg } from '@prisma/adapter-pg';
import {
  ColumnTypeEnum,
  type SqlDriverAdapter,
  type SqlMigrationAwareDriverAdapterFactory,
  type SqlQuery,
  type SqlResultSet,
  type Transaction,
} from '@prisma/driver-adapter-utils';
import pg from 'pg';
import {
  type ConnectionTarget,
  inDatabase,
  parseConnectionTarget,
  quoteIdentifier,
} from './connection-target.js';

/** PostgreSQL's internal one-byte `"char"` type (pg_class.relkind, pg_constraint.contype…). */
const CHAR_OID = 18;
const TEXT_OID = 25;

/**
 * The driver adapter the wasm schema engine runs on: @prisma/adapter-pg, with three things
 * the native engine does and adapter-pg 7.10 does not:
 *
 * - the URL's `?schema=` is the search_path (connection-target.ts), and the adapter reports
 *   it as its schema, so the engine describes and migrates that schema only;
 * - a migration script is sent whole, as one simple-protocol query, as the native engine
 *   does; adapter-pg's executeScript splits the text on `;`, which cuts a
 *   `COMMENT ON … IS 'a; b'` or a function body in two;
 * - the engine's catalog queries return `"char"` columns, which adapter-pg 7.10 cannot
 *   decode (its type map has no OID 18 and throws UnsupportedNativeDataType). We read them
 *   as text and tell the engine they are Prisma's Character column type, which is what the
 *   engine expects for them (reporting Text makes it panic).
 *
 * connectToShadowDb creates a fresh database next to the main one and drops it on dispose,
 * as the native engine does; with a shadowDatabaseUrl it empties that schema instead.
 */
export class PgSchemaEngineAdapterFactory implements SqlMigrationAwareDriverAdapterFactory {
  readonly provider = 'postgres' as const;
  readonly adapterName = '@prisma/adapter-pg';
  /** Adapters the engine has not disposed yet (closed on shutdown, shadow databases dropped). */
  private readonly open = new Set<SqlDriverAdapter>();

  constructor(
    private readonly target: ConnectionTarget,
    private readonly shadowDatabaseUrl?: string,
  ) {}

  connect(): Promise<SqlDriverAdapter> {
    return this.track(connectAdapter(this.target));
  }

  /** Disposes what is still open: pools end, shadow databases are dropped. */
  async close(): Promise<void> {
    const adapters = [...this.open];
    this.open.clear();
    await Promise.allSettled(adapters.map((adapter) => adapter.dispose()));
  }

  private async track(connecting: Promise<SqlDriverAdapter>): Promise<SqlDriverAdapter> {
    const adapter = await connecting;
    this.open.add(adapter);
    const dispose = adapter.dispose.bind(adapter);
    adapter.dispose = async () => {
      this.open.delete(adapter);
      await dispose();
    };
    return adapter;
  }

  connectToShadowDb(): Promise<SqlDriverAdapter> {
    return this.track(this.connectShadow());
  }

  private async connectShadow(): Promise<SqlDriverAdapter> {
    if (this.shadowDatabaseUrl) {
      const shadow = parseConnectionTarget(this.shadowDatabaseUrl);
      await withClient(shadow, async (client) => {
        await client.query(`DROP SCHEMA IF EXISTS ${quoteIdentifier(shadow.schema)} CASCADE`);
        await client.query(`CREATE SCHEMA ${quoteIdentifier(shadow.schema)}`);
      });
      return connectAdapter(shadow);
    }
    const name = `prisma_migrate_shadow_db_${randomUUID()}`;
    await withClient(this.target, (client) =>
      client.query(`CREATE DATABASE ${quoteIdentifier(name)}`),
    );
    try {
      return await connectAdapter(inDatabase(this.target, name), () =>
        withClient(this.target, (client) =>
          client.query(`DROP DATABASE IF EXISTS ${quoteIdentifier(name)}`),
        ),
      );
    } catch (error) {
      await withClient(this.target, (client) =>
        client.query(`DROP DATABASE IF EXISTS ${quoteIdentifier(name)}`),
      ).catch(() => undefined);
      throw error;
    }
  }
}

async function connectAdapter(
  target: ConnectionTarget,
  afterDispose?: () => Promise<unknown>,
): Promise<SqlDriverAdapter> {
  const pool = new pg.Pool({ ...target.poolConfig, max: 2 });
  // An idle client that errors (server restart) must not crash the engine process.
  pool.on('error', () => undefined);
  const adapter = await new PrismaPg(pool, {
    schema: target.schema,
    disposeExternalPool: true,
  }).connect();
  readCharColumns(adapter);
  const startTransaction = adapter.startTransaction.bind(adapter);
  const dispose = adapter.dispose.bind(adapter);
  return Object.assign(adapter, {
    executeScript: (script: string) => executeScriptWhole(adapter, script),
    startTransaction: async (
      isolationLevel?: Parameters<SqlDriverAdapter['startTransaction']>[0],
    ) => readCharColumns(await startTransaction(isolationLevel)),
    dispose: async () => {
      await dispose();
      await afterDispose?.();
    },
  });
}

/**
 * executeRaw with no arguments goes out as a simple-protocol query (node-postgres prepares
 * only when there are values or a statement name, and adapter-pg names none), so the whole
 * script runs as PostgreSQL runs a psql file: every statement, in one implicit transaction,
 * with adapter-pg's own error mapping.
 */
async function executeScriptWhole(adapter: SqlDriverAdapter, script: string): Promise<void> {
  await adapter.executeRaw({ sql: script, args: [], argTypes: [] });
}

/** What adapter-pg 7.10's queryables have inside (PgQueryable.performIO). */
interface PerformIO {
  performIO(query: SqlQuery): Promise<pg.QueryResult | pg.QueryResult[]>;
}

const charColumnsByRows = new WeakMap<unknown[], number[]>();

/**
 * Lets a queryable return `"char"` columns: node-postgres has already parsed them as strings
 * when performIO returns, so we relabel the field as text before adapter-pg maps the types,
 * then report those columns as Character. The rows array is the same object from pg's result
 * to the result set, which is how the two halves find each other with no shared state per call.
 * adapter-pg is pinned (7.10.0); if its internals move, this fails loudly here, not in the engine.
 */
function readCharColumns<T extends SqlDriverAdapter | Transaction>(queryable: T): T {
  const internals = queryable as unknown as Partial<PerformIO>;
  if (typeof internals.performIO !== 'function') {
    throw new Error(
      '@prisma/adapter-pg no longer has performIO; the "char" mapping in pg-adapter-factory.ts needs updating',
    );
  }
  const performIO = internals.performIO.bind(queryable);
  const queryRaw = queryable.queryRaw.bind(queryable);
  return Object.assign(queryable, {
    performIO: async (query: SqlQuery) => {
      const result = await performIO(query);
      if (!Array.isArray(result) && result.fields) {
        const charColumns: number[] = [];
        result.fields.forEach((field, index) => {
          if (field.dataTypeID === CHAR_OID) {
            field.dataTypeID = TEXT_OID;
            charColumns.push(index);
          }
        });
        if (charColumns.length > 0) charColumnsByRows.set(result.rows, charColumns);
      }
      return result;
    },
    queryRaw: async (query: SqlQuery): Promise<SqlResultSet> => {
      const resultSet = await queryRaw(query);
      for (const index of charColumnsByRows.get(resultSet.rows) ?? []) {
        resultSet.columnTypes[index] = ColumnTypeEnum.Character;
      }
      return resultSet;
    },
  });
}

/** One short-lived connection for administration (CREATE/DROP DATABASE, shadow resets). */
export async function withClient<T>(
  target: ConnectionTarget,
  work: (client: pg.Client) => Promise<T>,
): Promise<T> {
  const client = new pg.Client(target.poolConfig);
  client.on('error', () => undefined);
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}
