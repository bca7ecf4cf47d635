import { pickRandom } from '../random.js';

interface Workspace {
  id: string;
  ownerId: string;
}

/** Receives each generated request; a boundary tracker's track() fits. */
export type RequestSink = (
  workspaceId: string,
  ownerId: string,
  allowed: number,
  denied: number,
) => void;

export interface SyntheticTrafficOptions {
  /** This replica's position in the fleet (0-based) and the fleet size. */
  replicaIndex: number;
  replicas: number;
  workspaces: number;
  users: number;
  ratePerSecond: number;
  /** Share of requests the boundary denies. */
  deniedShare?: number;
  /** Share of requests for workspaces of the replica's own shard (the rest go anywhere). */
  affinity?: number;
  /** Generation tick; requests due since the last tick are generated in a burst. */
  tickMs?: number;
  random?: () => number;
}

/**
 * Deterministic ids shared by every replica, so uniques overlap across replicas the way they
 * do behind a load balancer: the exact distinct count stays at most `workspaces` while coder's
 * per-replica sum grows with the fleet.
 */
export function workspaceId(index: number): string {
  return `5a1f0000-0000-4000-8000-${index.toString(16).padStart(12, '0')}`;
}

export function userId(index: number): string {
  return `0e5e0000-0000-4000-8000-${index.toString(16).padStart(12, '0')}`;
}

/** A workspace's owner: workspaces are spread over users round-robin. */
export function ownerOf(workspaceIndex: number, users: number): number {
  return workspaceIndex % users;
}

/**
 * Boundary traffic at a steady rate: each request is one allowed or denied call for a
 * workspace, mostly from the replica's own shard (sticky sessions), sometimes any workspace.
 * The count is exact: after t seconds, floor(rate × t) requests were generated.
 */
export class SyntheticTraffic {
  private timer: NodeJS.Timeout | undefined;
  private startedAt = 0;
  private generated = 0;
  private readonly workspaces: Workspace[];
  private readonly ownShard: Workspace[];
  private readonly random: () => number;

  constructor(
    private readonly options: SyntheticTrafficOptions,
    private readonly sink: RequestSink,
  ) {
    this.random = options.random ?? Math.random;
    this.workspaces = Array.from({ length: options.workspaces }, (_, index) => ({
      id: workspaceId(index),
      ownerId: userId(ownerOf(index, options.users)),
    }));
    this.ownShard = this.workspaces.filter(
      (_, index) => index % options.replicas === options.replicaIndex % options.replicas,
    );
  }

  start(): void {
    if (this.timer) return;
    this.startedAt = performance.now();
    const tickMs = this.options.tickMs ?? 20;
    this.timer = setInterval(() => this.generateDue(), tickMs);
  }

  /** Stops generating at once; nothing is generated after this returns. */
  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private generateDue(): void {
    const elapsedSeconds = (performance.now() - this.startedAt) / 1000;
    const due = Math.floor(this.options.ratePerSecond * elapsedSeconds) - this.generated;
    for (let i = 0; i < due; i++) this.generateOne();
  }

  private generateOne(): void {
    const { affinity = 0.75, deniedShare = 0.12 } = this.options;
    const fromOwnShard = this.ownShard.length > 0 && this.random() < affinity;
    const workspace = pickRandom(fromOwnShard ? this.ownShard : this.workspaces, this.random);
    if (!workspace) return;
    const denied = this.random() < deniedShare;
    this.sink(workspace.id, workspace.ownerId, denied ? 0 : 1, denied ? 1 : 0);
    this.generated++;
  }
}
