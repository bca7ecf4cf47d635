import { fork, type ChildProcess } from 'node:child_process';
import { REPLICA_ROLE, RUN_SCRIPT } from './process-entry.js';
import {
  REPLICA_CONFIG_ENV,
  type ParentToReplica,
  type ReplicaConfig,
  type ReplicaState,
  type ReplicaToParent,
  type UnconfirmedBatch,
} from './replica/protocol.js';

export type ReplicaStatus =
  'starting' | 'ready' | 'running' | 'frozen' | 'killed' | 'stopped' | 'crashed';

const READY_TIMEOUT_MS = 90_000;
const STOP_TIMEOUT_MS = 30_000;

/** The simulator's side of one replica process. */
export class ReplicaHandle {
  status: ReplicaStatus = 'starting';
  replicaId: string | undefined;
  /** Where the replica serves /metrics on 127.0.0.1. */
  metricsPort: number | undefined;
  /** When each of its completed flushes ended (epoch ms), for the stall measurement. */
  readonly flushCompletedAtMs: number[] = [];
  /** The latest state the replica reported. */
  state: ReplicaState | undefined;
  /** Latency samples from every state message so far. */
  readonly flushLatencyMs: number[] = [];
  readonly cutoverLatencyMs: number[] = [];
  /** Why the replica ended badly (crash, no answer to stop), for the report. */
  failure: string | undefined;
  private stderrTail = '';
  private readonly exited: Promise<void>;
  private readonly waiters = new Map<ReplicaToParent['type'], (message: ReplicaToParent) => void>();

  constructor(
    readonly index: number,
    private readonly child: ChildProcess,
  ) {
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderrTail = (this.stderrTail + chunk).slice(-2_000);
    });
    child.on('message', (message: ReplicaToParent) => this.receive(message));
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        if (this.status !== 'killed' && this.status !== 'stopped') {
          this.status = 'crashed';
          this.failure ??= `replica ${index} exited unexpectedly (${signal ?? `code ${code}`})${this.describeStderr()}`;
        }
        resolve();
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Resolves when the replica is connected and has its id. */
  ready(): Promise<void> {
    if (this.status !== 'starting') return Promise.resolve();
    return this.waitFor('ready', READY_TIMEOUT_MS).then(() => undefined);
  }

  start(): void {
    if (this.status !== 'ready') return;
    this.status = 'running';
    this.post({ type: 'start' });
  }

  /**
   * Asks the replica to stop generating and flushing and to report where it stands; after the
   * answer its numbers cannot change, so they are exact at the SIGKILL that follows.
   */
  async freeze(
    timeoutMs: number,
  ): Promise<{ state: ReplicaState; unconfirmedBatch: UnconfirmedBatch | undefined }> {
    this.post({ type: 'freeze' });
    const answer = await this.waitFor('frozen', timeoutMs);
    if (answer.type !== 'frozen') throw new Error('unreachable');
    this.status = 'frozen';
    return { state: answer.state, unconfirmedBatch: answer.unconfirmedBatch };
  }

  /** SIGKILL: the replica gets no chance to flush. */
  async kill(): Promise<void> {
    if (this.alive) {
      this.status = 'killed';
      this.child.kill('SIGKILL');
    }
    await this.exited;
  }

  /** Graceful stop: the final flush, the reporter's last delivery. Kills after a timeout. */
  async stop(): Promise<void> {
    if (!this.alive) return;
    this.post({ type: 'stop' });
    try {
      await this.waitFor('stopped', STOP_TIMEOUT_MS);
      this.status = 'stopped';
    } catch (error) {
      this.failure ??= `replica ${this.index} did not stop: ${error instanceof Error ? error.message : String(error)}`;
      this.child.kill('SIGKILL');
    }
    await this.exited;
  }

  /** Last resort in cleanup: no replica outlives the simulator. */
  forceKill(): void {
    if (this.alive) this.child.kill('SIGKILL');
  }

  private post(message: ParentToReplica): void {
    if (this.child.connected) this.child.send(message);
  }

  private receive(message: ReplicaToParent): void {
    switch (message.type) {
      case 'ready':
        this.replicaId = message.replicaId;
        this.metricsPort = message.metricsPort;
        this.status = 'ready';
        break;
      case 'state':
      case 'frozen':
      case 'stopped':
        this.absorb(message.state);
        break;
      case 'fatal':
        this.failure ??= `replica ${this.index} failed: ${message.message}`;
        break;
    }
    const waiter = this.waiters.get(message.type);
    if (waiter) {
      this.waiters.delete(message.type);
      waiter(message);
    }
  }

  private absorb(state: ReplicaState): void {
    this.flushLatencyMs.push(...state.flushLatencyMs);
    this.cutoverLatencyMs.push(...state.cutoverLatencyMs);
    this.flushCompletedAtMs.push(...state.flushCompletedAtMs);
    this.state = state;
  }

  private waitFor(type: ReplicaToParent['type'], timeoutMs: number): Promise<ReplicaToParent> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(type);
        reject(
          new Error(
            `no '${type}' from replica ${this.index} within ${timeoutMs / 1000}s${this.describeStderr()}`,
          ),
        );
      }, timeoutMs);
      void this.exited.then(() => {
        clearTimeout(timer);
        if (this.waiters.delete(type)) {
          reject(new Error(this.failure ?? `replica ${this.index} exited before '${type}'`));
        }
      });
      this.waiters.set(type, (message) => {
        clearTimeout(timer);
        resolve(message);
      });
    });
  }

  private describeStderr(): string {
    const tail = this.stderrTail.trim();
    return tail ? `: ${tail.split('\n').slice(-5).join(' | ')}` : '';
  }
}

/** Forks one process per replica config and waits until all are connected. */
export async function startFleet(configs: ReplicaConfig[]): Promise<ReplicaHandle[]> {
  const handles = configs.map((config) => {
    const child = fork(RUN_SCRIPT, [REPLICA_ROLE, String(config.index)], {
      env: { ...process.env, [REPLICA_CONFIG_ENV]: JSON.stringify(config) },
      // stdout is unused; stderr is kept for the report if a replica dies.
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      serialization: 'advanced',
    });
    return new ReplicaHandle(config.index, child);
  });
  try {
    await Promise.all(handles.map((handle) => handle.ready()));
  } catch (error) {
    for (const handle of handles) handle.forceKill();
    throw error;
  }
  return handles;
}
