import { connect, createServer, type Server, type Socket } from 'node:net';
import { findFreePort } from './free-port.js';

export interface CommitCuttingProxy {
  /** The database URL rewritten to go through the proxy. */
  databaseUrl: string;
  /**
   * Arms the proxy: the next query any client sends whose SQL matches `sql` (default: COMMIT)
   * is forwarded to PostgreSQL; once PostgreSQL has finished it (ReadyForQuery, so a COMMIT or
   * an autocommit statement is durable), the connection is cut before the reply reaches the
   * client. The promise resolves when that has happened.
   */
  cutAfterNext(sql?: RegExp): Promise<void>;
  close(): Promise<void>;
}

/**
 * A TCP proxy for the PostgreSQL wire protocol that can make a connection die at the worst
 * possible moment: after COMMIT (or an autocommit statement) was sent and executed, before
 * the client hears back. The client then cannot know whether its transaction counted (an
 * ambiguous commit).
 *
 * It parses only message framing (type byte + length) on the client-to-server side, so it
 * recognises COMMIT sent as a simple Query ('Q') or as a Parse ('P') of the extended protocol.
 * No TLS: use it with plain loopback URLs.
 */
export async function startCommitCuttingProxy(databaseUrl: string): Promise<CommitCuttingProxy> {
  const target = new URL(databaseUrl);
  const targetHost = target.hostname;
  const targetPort = Number(target.port || 5432);
  const port = await findFreePort();
  let armed: { sql: RegExp; done: () => void } | undefined;
  const sockets = new Set<Socket>();

  const server: Server = createServer((client) => {
    const upstream = connect(targetPort, targetHost);
    sockets.add(client).add(upstream);
    let pending = Buffer.alloc(0);
    let startupSeen = false;
    let cutting: (() => void) | undefined;
    let heldReply = Buffer.alloc(0);
    const closeBoth = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', closeBoth);
    upstream.on('error', closeBoth);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());

    client.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      // Forward whole messages only, noting a COMMIT when armed.
      for (;;) {
        const headerLength = startupSeen ? 5 : 4;
        if (pending.length < headerLength) break;
        const length = startupSeen ? pending.readInt32BE(1) + 1 : pending.readInt32BE(0);
        if (pending.length < length) break;
        const message = pending.subarray(0, length);
        pending = pending.subarray(length);
        if (startupSeen && armed && queryText(message)?.match(armed.sql)) {
          cutting = armed.done;
          armed = undefined;
        }
        startupSeen = true;
        upstream.write(message);
      }
    });
    upstream.on('data', (chunk: Buffer) => {
      if (!cutting) {
        client.write(chunk);
        return;
      }
      // Hold the reply until ReadyForQuery: by then the statement (and its commit) is done.
      heldReply = Buffer.concat([heldReply, chunk]);
      if (containsReadyForQuery(heldReply)) {
        const done = cutting;
        cutting = undefined;
        closeBoth();
        done();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));

  const proxied = new URL(databaseUrl);
  proxied.hostname = '127.0.0.1';
  proxied.port = String(port);
  return {
    databaseUrl: proxied.toString(),
    cutAfterNext: (sql = /^\s*COMMIT\b/i) =>
      new Promise<void>((resolve) => (armed = { sql, done: resolve })),
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** The SQL of a simple Query ('Q') or an extended-protocol Parse ('P'), else undefined. */
function queryText(message: Buffer): string | undefined {
  const type = String.fromCharCode(message[0] ?? 0);
  const body = message.subarray(5);
  if (type === 'Q') return body.toString('utf8');
  if (type !== 'P') return undefined;
  const nameEnd = body.indexOf(0);
  return body.subarray(nameEnd + 1, body.indexOf(0, nameEnd + 1)).toString('utf8');
}

/** Whether a run of backend messages includes ReadyForQuery ('Z'). */
function containsReadyForQuery(messages: Buffer): boolean {
  let offset = 0;
  while (offset + 5 <= messages.length) {
    if (messages[offset] === 0x5a /* Z */) return true;
    offset += 1 + messages.readInt32BE(offset + 1);
  }
  return false;
}
