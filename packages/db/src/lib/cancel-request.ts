import { connect, type Socket } from 'node:net';

/** PostgreSQL's CancelRequest code (1234 << 16 | 5678), protocol section "CancelRequest". */
const CANCEL_REQUEST_CODE = 80877102;

export interface CancelTarget {
  /** The host the connection went to, or a Unix socket directory (starts with '/'). */
  host: string;
  port: number;
  /** From the server's BackendKeyData. */
  processID: number;
  secretKey: number;
}

/**
 * Asks the server to cancel whatever `target`'s backend is running: the 16-byte CancelRequest
 * on a new connection, which the server answers by closing it. Fire and forget, bounded by
 * `timeoutMs`: when the network is partitioned the request may never arrive, and nothing may
 * wait for it. The server may also never see it (a backend already gone); either way the
 * caller has already destroyed the stuck connection, and the backend ends on its own once it
 * notices (lock_timeout, statement_timeout, idle_in_transaction_session_timeout or TCP).
 * Resolves true when the request was written, false otherwise; never rejects.
 */
export function sendCancelRequest(target: CancelTarget, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    let socket: Socket;
    try {
      socket = target.host.startsWith('/')
        ? connect(`${target.host}/.s.PGSQL.${target.port}`)
        : connect(target.port, target.host);
    } catch {
      resolve(false);
      return;
    }
    let written = false;
    const finish = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(written);
    };
    const timer = setTimeout(finish, timeoutMs);
    timer.unref?.();
    socket.unref();
    socket.once('error', finish);
    socket.once('close', finish);
    socket.once('connect', () => {
      const packet = Buffer.alloc(16);
      packet.writeInt32BE(16, 0);
      packet.writeInt32BE(CANCEL_REQUEST_CODE, 4);
      packet.writeInt32BE(target.processID, 8);
      packet.writeInt32BE(target.secretKey, 12);
      // The server closes the connection after reading the request; end() lets it.
      socket.end(packet, () => {
        written = true;
      });
    });
  });
}
