import type { IncomingMessage, ServerResponse } from 'node:http';
import type { HostPrismaClient } from './host-client.js';

/** What a request did, for usage tracking: `undefined` when it names no workspace and user. */
export interface Outcome {
  workspaceId: string;
  userId: string;
  allowed: boolean;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const NOTES = /^\/workspaces\/([^/]+)\/notes$/;
const MAX_BODY_BYTES = 16 * 1024;

/**
 * The service's API: notes per workspace.
 *   GET  /workspaces/:workspaceId/notes   latest 50 notes          (x-user-id: uuid)
 *   POST /workspaces/:workspaceId/notes   {"text": "…"}, 201       (x-user-role: viewer → 403)
 *   GET  /healthz                         200, not tracked
 * A request with a workspace and a user is one request of usage: allowed when served (2xx),
 * denied when the policy refused it (403). Malformed requests (400, 404) name no one and
 * are not usage.
 */
export async function handle(
  request: IncomingMessage,
  response: ServerResponse,
  host: HostPrismaClient,
): Promise<Outcome | undefined> {
  const url = new URL(request.url ?? '/', 'http://localhost');
  if (url.pathname === '/healthz') {
    send(response, 200, { ok: true });
    return undefined;
  }
  const match = NOTES.exec(url.pathname);
  if (!match) {
    send(response, 404, { error: 'not found' });
    return undefined;
  }
  const workspaceId = (match[1] ?? '').toLowerCase();
  const userId = String(request.headers['x-user-id'] ?? '').toLowerCase();
  if (!UUID.test(workspaceId) || !UUID.test(userId)) {
    send(response, 400, { error: 'workspace id and x-user-id must be uuids' });
    return undefined;
  }
  if (request.method === 'GET') {
    const notes = await host.note.findMany({
      where: { workspaceId },
      orderBy: { createdAt: 'desc' },
      take: 50,
    });
    send(response, 200, { notes });
    return { workspaceId, userId, allowed: true };
  }
  if (request.method === 'POST') {
    if (request.headers['x-user-role'] === 'viewer') {
      send(response, 403, { error: 'viewers cannot write notes' });
      return { workspaceId, userId, allowed: false };
    }
    const body = await readJson(request);
    const text = typeof body?.['text'] === 'string' ? body['text'] : undefined;
    if (text === undefined) {
      send(response, 400, { error: 'body must be {"text": "…"}' });
      return undefined;
    }
    const note = await host.note.create({ data: { workspaceId, authorId: userId, text } });
    send(response, 201, { note });
    return { workspaceId, userId, allowed: true };
  }
  send(response, 405, { error: 'method not allowed' });
  return undefined;
}

function send(response: ServerResponse, status: number, body: unknown): void {
  const json = JSON.stringify(body);
  response.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(json),
  });
  response.end(json);
}

async function readJson(request: IncomingMessage): Promise<Record<string, unknown> | undefined> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) return undefined;
    chunks.push(chunk as Buffer);
  }
  try {
    const parsed: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    return typeof parsed === 'object' && parsed !== null
      ? (parsed as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}
