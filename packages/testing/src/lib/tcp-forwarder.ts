import { connect, createServer, type Server, type Socket } from 'node:net';
import { findFreePort } from './free-port.js';

export interface TcpForwarder {
  /** The loopback port clients connect to. */
  port: number;
  /** Where new connections go now (`host:port`). */
  target(): string;
  /**
   * Sends new connections to `url`'s host and port. Connections already open stay with the
   * old target unless `resetConnections` is true, in which case they are destroyed (an RST:
   * what a proxy that ends sessions on a switch, or a moved IP address, does to clients).
   * Leaving them open is what a DNS change or a proxy without session shutdown leaves behind.
   */
  pointTo(url: string, options?: { resetConnections?: boolean }): void;
  /**
   * Stops moving bytes, on open connections and on those opened from now on, without closing
   * anything: a stalled link. TCP back-pressure holds the bytes (the forwarder stops reading),
   * so nothing is lost; `resume()` delivers them.
   */
  pause(): void;
  resume(): void;
  /** Connections open through the forwarder, per target (`host:port`). */
  openConnections(): Map<string, number>;
  /** Connections accepted since the forwarder started, closed ones included. */
  acceptedConnections(): number;
  close(): Promise<void>;
}

interface Pair {
  client: Socket;
  upstream: Socket;
  target: string;
}

/**
 * A plain TCP forwarder on a free loopback port that can be re-pointed: the "virtual IP" of a
 * failover test, and the replication link between two nodes. It does not parse the protocol.
 */
export async function startTcpForwarder(url: string): Promise<TcpForwarder> {
  let target = hostAndPort(url);
  let paused = false;
  let accepted = 0;
  const pairs = new Set<Pair>();
  const destroy = (pair: Pair) => {
    pairs.delete(pair);
    pair.client.destroy();
    pair.upstream.destroy();
  };

  const server: Server = createServer((client) => {
    accepted++;
    const [host, port] = splitTarget(target);
    const upstream = connect(port, host);
    const pair: Pair = { client, upstream, target };
    pairs.add(pair);
    const closeBoth = () => destroy(pair);
    client.on('error', closeBoth).on('close', closeBoth);
    upstream.on('error', closeBoth).on('close', closeBoth);
    // Plain 'data' handlers rather than pipe(): pipe() resumes a source on 'drain', which
    // would undo pause().
    client.on('data', (chunk: Buffer) => upstream.write(chunk));
    upstream.on('data', (chunk: Buffer) => client.write(chunk));
    if (paused) {
      client.pause();
      upstream.pause();
    }
  });
  const port = await findFreePort();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });

  return {
    port,
    target: () => target,
    pointTo(next, options = {}) {
      target = hostAndPort(next);
      if (options.resetConnections) {
        for (const pair of [...pairs]) {
          pair.client.resetAndDestroy();
          destroy(pair);
        }
      }
    },
    pause() {
      paused = true;
      for (const pair of pairs) {
        pair.client.pause();
        pair.upstream.pause();
      }
    },
    resume() {
      paused = false;
      for (const pair of pairs) {
        pair.client.resume();
        pair.upstream.resume();
      }
    },
    openConnections() {
      const counts = new Map<string, number>();
      for (const pair of pairs) counts.set(pair.target, (counts.get(pair.target) ?? 0) + 1);
      return counts;
    },
    acceptedConnections: () => accepted,
    close: async () => {
      for (const pair of [...pairs]) destroy(pair);
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function hostAndPort(url: string): string {
  const parsed = new URL(url);
  return `${parsed.hostname}:${parsed.port || 5432}`;
}

function splitTarget(target: string): [string, number] {
  const colon = target.lastIndexOf(':');
  return [target.slice(0, colon), Number(target.slice(colon + 1))];
}
