import { createHash } from 'node:crypto';

/** The namespace of every usagekit report id (a random v4 uuid, fixed forever). */
export const REPORT_ID_NAMESPACE = '113541e9-cfdf-45fb-a05f-0ed257890c4a';

/**
 * A name-based uuid (RFC 9562 version 5: SHA-1 of namespace and name, version and variant bits
 * set). Same input, same id, on every replica and after any number of retries.
 */
export function uuidV5(name: string, namespace: string): string {
  const namespaceBytes = Buffer.from(namespace.replace(/-/g, ''), 'hex');
  if (namespaceBytes.length !== 16)
    throw new TypeError(`uuidV5: namespace is not a uuid: ${namespace}`);
  const hash = createHash('sha1').update(namespaceBytes).update(name, 'utf8').digest();
  const bytes = hash.subarray(0, 16);
  bytes.writeUInt8((bytes.readUInt8(6) & 0x0f) | 0x50, 6); // version 5
  bytes.writeUInt8((bytes.readUInt8(8) & 0x3f) | 0x80, 8); // RFC 4122 variant
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * The id of the report for one (deployment, event type, period). Deterministic, so a cutover
 * retried for the same period can never mint a second id, and the receiver can deduplicate
 * by it (it is the Idempotency-Key).
 */
export function reportIdFor(deploymentId: string, eventType: string, periodEndingAt: Date): string {
  return uuidV5(
    `${deploymentId}\n${eventType}\n${periodEndingAt.toISOString()}`,
    REPORT_ID_NAMESPACE,
  );
}
