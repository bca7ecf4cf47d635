import { Client } from 'pg';
import { startReplicationPair, type ReplicationPair } from '../src/index.js';

// The replication fixture the failover suites stand on: a real primary and a streaming
// standby, a VIP that can move with or without cutting open connections, and a demoted node
// that comes back in recovery and stays reachable.

async function connect(url: string): Promise<Client> {
  const client = new Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

describe('startReplicationPair (synchronous)', () => {
  let pair: ReplicationPair;
  beforeAll(async () => {
    pair = await startReplicationPair({ synchronous: true });
  }, 60_000);
  afterAll(async () => {
    await pair?.stop();
  });

  it('streams synchronously, fails over, and brings the old primary back in recovery', async () => {
    expect(await pair.primary.isInRecovery()).toBe(false);
    expect(await pair.standby.isInRecovery()).toBe(true);
    const client = await connect(pair.vipUrl);
    await client.query('CREATE TABLE t (n int)');
    await client.query('INSERT INTO t VALUES (1)');
    // Synchronous: the commit returned, so the standby has flushed it.
    const lsn = await pair.currentLsn();
    await pair.waitForStandby({ lsn, stage: 'flush', timeoutMs: 1 });
    await pair.waitForStandby({ stage: 'replay' });
    expect((await pair.standby.query('SELECT count(*)::int AS n FROM t'))[0]!.n).toBe(1);

    // A failover that cuts the connections open through the VIP.
    const oldPrimaryName = pair.primary.name;
    await pair.failover({ crash: false, resetConnections: true });
    expect(pair.primary.name).not.toBe(oldPrimaryName);
    expect(await pair.primary.isInRecovery()).toBe(false);
    expect(await pair.standby.isInRecovery()).toBe(true);
    await expect(client.query('SELECT 1')).rejects.toThrow();
    const afterFailover = await connect(pair.vipUrl);
    await afterFailover.query('INSERT INTO t VALUES (2)');
    await pair.waitForStandby({ stage: 'replay' });
    expect((await pair.standby.query('SELECT count(*)::int AS n FROM t'))[0]!.n).toBe(2);
    await afterFailover.end();
  }, 60_000);
});

describe('startReplicationPair (asynchronous)', () => {
  let pair: ReplicationPair;
  beforeAll(async () => {
    pair = await startReplicationPair();
  }, 60_000);
  afterAll(async () => {
    await pair?.stop();
  });

  it('lags on demand and leaves open connections on the demoted node when the VIP moves without a reset', async () => {
    const setup = await connect(pair.vipUrl);
    await setup.query('CREATE TABLE t (n int)');
    await pair.waitForStandby({ stage: 'replay' });
    await pair.pauseReplay();
    await setup.query('INSERT INTO t VALUES (1)');
    await pair.waitForStandby({ stage: 'flush' });
    expect((await pair.standby.query('SELECT count(*)::int AS n FROM t'))[0]!.n).toBe(0);
    await pair.resumeReplay();
    await pair.waitForStandby({ stage: 'replay' });
    expect((await pair.standby.query('SELECT count(*)::int AS n FROM t'))[0]!.n).toBe(1);

    // A stalled replication link: the standby does not even flush.
    pair.replicationLink.pause();
    await setup.query('INSERT INTO t VALUES (2)');
    await expect(pair.waitForStandby({ timeoutMs: 500 })).rejects.toThrow(/timed out/);
    pair.replicationLink.resume();
    await pair.waitForStandby();
    await setup.end();

    // Crash, promote, the old primary back in recovery while the VIP still names it, a
    // client connects there; then the VIP moves without resetting that connection.
    await pair.stopPrimary('immediate');
    await pair.promoteStandby();
    await pair.startStandby();
    const stale = await connect(pair.vipUrl);
    expect((await stale.query('SELECT pg_is_in_recovery() AS r')).rows[0].r).toBe(true);
    pair.vip.pointTo(pair.primary.url, { resetConnections: false });
    await expect(stale.query('INSERT INTO t VALUES (3)')).rejects.toMatchObject({
      code: '25006',
    });
    const fresh = await connect(pair.vipUrl);
    expect((await fresh.query('SELECT pg_is_in_recovery() AS r')).rows[0].r).toBe(false);
    await fresh.query('INSERT INTO t VALUES (3)');
    await Promise.all([stale.end(), fresh.end()]);
  }, 60_000);
});

describe('startReplicationPair ({ recoveryMinApplyDelayMs })', () => {
  let pair: ReplicationPair;
  beforeAll(async () => {
    pair = await startReplicationPair({ recoveryMinApplyDelayMs: 1_500 });
  }, 60_000);
  afterAll(async () => {
    await pair?.stop();
  });

  it('flushes at once and replays late', async () => {
    const client = await connect(pair.vipUrl);
    // recovery_min_apply_delay holds back commit records: the table appears late too.
    await client.query('CREATE TABLE t (n int)');
    const lsn = await pair.currentLsn();
    await pair.waitForStandby({ lsn, stage: 'flush' });
    await expect(pair.waitForStandby({ lsn, stage: 'replay', timeoutMs: 300 })).rejects.toThrow(
      /timed out/,
    );
    await pair.waitForStandby({ lsn, stage: 'replay' });
    await client.end();
  }, 60_000);
});
