/**
 * Every advisory lock key usagekit takes, in one place.
 *
 * Why these cannot collide:
 * - PostgreSQL keeps single-`bigint` keys and `(int, int)` key pairs apart (objsubid 1 vs 2),
 *   so only other single-`bigint` keys in the same database could clash.
 * - coder numbers its locks 1, 2, 3, … (`coderd/database/lock.go`); applications commonly use
 *   small integers or 32-bit hashes. Our keys start with the ASCII bytes of "usag" in the high
 *   32 bits, so they are above 2^62 and no 32-bit or small key can equal them.
 * - The one exception is on purpose: migrations take Prisma Migrate's own key, so our
 *   migrate() and `prisma migrate deploy` exclude each other.
 * Keys never change once released and retired keys stay reserved.
 */
export const LockIds = {
  /** Prisma Migrate's key (prisma-engines `ADVISORY_LOCK_ID`); shared with `prisma migrate`. */
  migrate: 72707369n,
  /**
   * boundary_usage_stats: writers hold it shared, the cutover exclusive. A flush then lands
   * wholly before or wholly after a cutover, and two cutovers never interleave (coder #21907).
   */
  boundaryUsageStats: 0x7573_6167_0000_0001n,
  /**
   * applyRoles(): the roles script's REVOKEs and GRANTs on this database run one at a time,
   * because concurrent GRANTs on one table fail with "tuple concurrently updated". Roles are
   * cluster-wide and advisory locks per database, so the script also tolerates a role
   * another database's run created at the same moment (see packages/db/sql/roles.sql).
   */
  roles: 0x7573_6167_0000_0002n,
} as const;

export type LockId = (typeof LockIds)[keyof typeof LockIds];
