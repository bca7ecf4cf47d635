/**
 * A self-signed certificate for the bench's servers, so TLS connections (`sslmode=require`,
 * as managed databases run them) can be measured on loopback: the embedded PostgreSQL and the
 * bench's PgBouncer serve it. RSA 2048, what Debian's snakeoil certificate and most managed
 * databases' certificates use, since the handshake's cost depends on the key.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface ServerCertificate {
  certFile: string;
  keyFile: string;
  remove(): void;
}

/** The `postgres` system user that servers run as when we are root, or undefined. */
function serverUser(): { uid: number; gid: number } | undefined {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return undefined;
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((entry) => entry.startsWith('postgres:'));
  if (!line) return undefined;
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

/**
 * Generates the pair with openssl in a temp directory. PostgreSQL refuses a key readable by
 * others and one not owned by its own user, so as root the files go to `postgres`. Returns
 * undefined when openssl is missing or fails (TLS is then not measured).
 */
export function createServerCertificate(): ServerCertificate | undefined {
  const dir = mkdtempSync(join(tmpdir(), 'usagekit-bench-tls-'));
  const certFile = join(dir, 'server.crt');
  const keyFile = join(dir, 'server.key');
  const remove = () => rmSync(dir, { recursive: true, force: true });
  try {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-days',
        '2',
        '-subj',
        '/CN=127.0.0.1',
      ].concat(['-keyout', keyFile, '-out', certFile]),
      { stdio: 'ignore', timeout: 30_000 },
    );
    chmodSync(dir, 0o755);
    chmodSync(keyFile, 0o600);
    chmodSync(certFile, 0o644);
    const owner = serverUser();
    if (owner) {
      chownSync(keyFile, owner.uid, owner.gid);
      chownSync(certFile, owner.uid, owner.gid);
    }
    return { certFile, keyFile, remove };
  } catch {
    remove();
    return undefined;
  }
}

/**
 * The URL with TLS required and libpq's meaning of `require` (encrypt, do not verify: the
 * certificate is self-signed). node-postgres alone treats `sslmode=require` as verify-full.
 */
export function withTls(databaseUrl: string): string {
  const url = new URL(databaseUrl);
  url.searchParams.set('sslmode', 'require');
  url.searchParams.set('uselibpqcompat', 'true');
  return url.toString();
}
