import { randomUUID } from 'node:crypto';

/**
 * A random uuid as a flat string, like one parsed from a request or read from a socket.
 * `randomUUID()` itself returns a tree of concatenations (a V8 ConsString of ~20 nodes,
 * ~480 bytes); hashing and comparing those is many times slower than real ids, and would
 * make a Set or Map look ten times slower than it is.
 */
export function flatUuid(): string {
  return Buffer.from(randomUUID(), 'latin1').toString('latin1');
}
