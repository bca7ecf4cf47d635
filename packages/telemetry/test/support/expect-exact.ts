import type { FleetAccount } from './fault-fleet.js';

/**
 * What every fault and failover scenario asserts about a fleet's account: every request
 * tracked is in exactly one report the receiver accepted, nothing is left behind, and the
 * reports are consistent.
 */
export function expectExact(account: FleetAccount): void {
  expect(account.tracked.allowed + account.tracked.denied).toBeGreaterThan(0n);
  expect({
    finalCutClaimed: account.finalCutClaimed,
    withoutSummary: account.withoutSummary,
    lost: account.lost,
    countedTwice: account.countedTwice,
    pending: account.pending,
    conflicting: account.conflicting,
    inconsistentUniques: account.inconsistentUniques,
    staleRequests: account.staleRequests,
    leftInTable: account.leftInTable,
    undelivered: account.undelivered,
  }).toEqual({
    finalCutClaimed: true,
    withoutSummary: [],
    lost: 0n,
    countedTwice: 0n,
    pending: 0n,
    conflicting: 0,
    inconsistentUniques: [],
    staleRequests: 0n,
    leftInTable: 0n,
    undelivered: 0n,
  });
  expect(account.reported).toEqual(account.tracked);
  // One outbox row per report the receiver has; every id tracked is in some report.
  expect(account.outboxRows).toBe(BigInt(account.reports));
  expect(account.uniqueWorkspacesSum).toBeGreaterThanOrEqual(BigInt(account.workspacesTracked));
  expect(account.uniqueUsersSum).toBeGreaterThanOrEqual(BigInt(account.usersTracked));
}
