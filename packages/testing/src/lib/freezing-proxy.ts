import { connect, createServer, type Server, type Socket } from 'node:net';
import { findFreePort } from './free-port.js';

export interface FreezingProxy {
  /** The database URL rewritten to go through the proxy (127.0.0.1). */
  databaseUrl: string;
  /**
   * Existing connections go silent: bytes in either direction are held, never delivered, and
   * nothing is closed (no FIN, no RST), as when a network partitions, a NAT or load balancer
   * drops the flow, or a failover leaves clients talking to a dead primary. With
   * `newConnections: true`, connections opened while frozen are accepted and go silent too.
   *
   * A close is still passed on by default: when one end closes a frozen connection (FIN or
   * RST), the proxy closes the other. With `dropCloses: true` the partition swallows closes
   * too, as a real one does: a client that closes politely (FIN) waits for a reply that never
   * comes and stays half-closed until it destroys its own socket, and the server never learns
   * that its client is gone (its backend stays, locks held, until a server-side timeout ends it).
   */
  freeze(options?: { newConnections?: boolean; dropCloses?: boolean }): void;
  /**
   * Ends the partition. Connections that were frozen are destroyed silently (their bytes are
   * dropped, as a real partition would have dropped them); new connections work again.
   * With `resumeFrozen: true` the held bytes are delivered instead (a network that stalled
   * and came back).
   */
  thaw(options?: { resumeFrozen?: boolean }): void;
  /** Connections currently open through the proxy, frozen or not. */
  openConnections(): number;
  close(): Promise<void>;
}

interface Pair {
  client: Socket;
  upstream: Socket;
  frozen: boolean;
  /** While frozen, a close from either end is swallowed instead of passed on. */
  dropCloses: boolean;
  /** A close was swallowed: passed on if the connection resumes. */
  closeHeld: boolean;
  heldToServer: Buffer[];
  heldToClient: Buffer[];
}

/**
 * A TCP proxy that can partition the network under a PostgreSQL client without closing
 * anything: the client's socket stays open and writable, the server's backend sees no
 * disconnect, and only deadlines (client-side timers, server-side timeouts) can end the wait.
 * That is the failure a plain `pg_terminate_backend` or server restart never shows: a dead
 * peer that says nothing. Loopback only, no TLS; it does not parse the protocol.
 */
export async function startFreezingProxy(databaseUrl: string): Promise<FreezingProxy> {
  const target = new URL(databaseUrl);
  const targetHost = target.hostname;
  const targetPort = Number(target.port || 5432);
  const port = await findFreePort();
  const pairs = new Set<Pair>();
  let freezeNew = false;
  let dropClosesOfNew = false;

  // Half-open allowed on both sockets, so a FIN from one end is an 'end' event the proxy
  // decides about (pass it on, or swallow it while partitioned), not an automatic close.
  const server: Server = createServer({ allowHalfOpen: true }, (client) => {
    const upstream = connect({ port: targetPort, host: targetHost, allowHalfOpen: true });
    const pair: Pair = {
      client,
      upstream,
      frozen: freezeNew,
      dropCloses: freezeNew && dropClosesOfNew,
      closeHeld: false,
      heldToServer: [],
      heldToClient: [],
    };
    pairs.add(pair);
    const closeBoth = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    const swallowed = () => {
      if (!(pair.frozen && pair.dropCloses)) return false;
      pair.closeHeld = true;
      return true;
    };
    // A FIN is passed on as a FIN (after the bytes before it); the side it came from is ended
    // when the other end's FIN comes back, and 'close' then tears the pair down.
    const passEnd = (to: Socket) => () => {
      if (!swallowed()) to.end();
    };
    client.on('end', passEnd(upstream));
    upstream.on('end', passEnd(client));
    for (const socket of [client, upstream]) {
      socket.on('error', () => swallowed() || closeBoth());
      socket.on('close', () => swallowed() || closeBoth());
    }
    client.on('data', (chunk: Buffer) => {
      if (pair.frozen) pair.heldToServer.push(chunk);
      else upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (pair.frozen) pair.heldToClient.push(chunk);
      else client.write(chunk);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });

  const proxied = new URL(databaseUrl);
  proxied.hostname = '127.0.0.1';
  proxied.port = String(port);

  return {
    databaseUrl: proxied.toString(),
    freeze(options = {}) {
      const dropCloses = options.dropCloses === true;
      for (const pair of pairs) {
        pair.frozen = true;
        pair.dropCloses = dropCloses;
      }
      freezeNew = options.newConnections === true;
      dropClosesOfNew = dropCloses;
    },
    thaw(options = {}) {
      freezeNew = false;
      for (const pair of [...pairs]) {
        if (!pair.frozen) continue;
        if (options.resumeFrozen) {
          pair.frozen = false;
          for (const chunk of pair.heldToServer.splice(0)) pair.upstream.write(chunk);
          for (const chunk of pair.heldToClient.splice(0)) pair.client.write(chunk);
          // A close the partition swallowed is passed on now. The pair stays listed until both
          // sockets have closed ('close' removes it), so close() still destroys a pair whose
          // other end never answers the FIN.
          if (pair.closeHeld) {
            pair.client.end();
            pair.upstream.end();
          }
        } else {
          // A partition that healed: the old flows are gone. Destroying without flushing
          // the held bytes is what a client sees once its peer's state was lost.
          pairs.delete(pair);
          pair.client.destroy();
          pair.upstream.destroy();
        }
      }
    },
    openConnections: () => pairs.size,
    close: async () => {
      for (const pair of pairs) {
        pair.client.destroy();
        pair.upstream.destroy();
      }
      pairs.clear();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
