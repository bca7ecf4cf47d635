/**
 * A real node:http receiver on 127.0.0.1 whose behaviour each test writes as a handler, and
 * which records what a receiver can see: every request (method, path, headers, body), when
 * it arrived, whether the client closed it before the answer was sent, and how many requests
 * of one Idempotency-Key were open at the same time.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface SeenRequest {
  index: number;
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
  body: string;
  key: string | undefined;
  /** performance.now() when the body had arrived. */
  at: number;
  /** The client closed the connection before the response was finished. */
  closedByClient: boolean;
}

export type Handler = (request: SeenRequest, response: ServerResponse) => void | Promise<void>;

export interface HttpReceiver {
  url: string;
  origin: string;
  port: number;
  requests: SeenRequest[];
  /** POSTs only. */
  posts(): SeenRequest[];
  /** The most requests of one Idempotency-Key that were open at once. */
  maxConcurrentPerKey(): number;
  close(): Promise<void>;
}

export async function startHttpReceiver(handler: Handler): Promise<HttpReceiver> {
  const requests: SeenRequest[] = [];
  const open = new Map<string, number>();
  let maxConcurrent = 0;
  const server = createServer((request, response) => {
    const key = request.headers['idempotency-key'] as string | undefined;
    if (key !== undefined) {
      const now = (open.get(key) ?? 0) + 1;
      open.set(key, now);
      maxConcurrent = Math.max(maxConcurrent, now);
      // 'close' fires once: when the response is finished or the connection is gone.
      response.once('close', () => open.set(key, (open.get(key) ?? 1) - 1));
    }
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const seen: SeenRequest = {
        index: requests.length,
        method: request.method ?? '',
        path: request.url ?? '',
        headers: request.headers,
        body: Buffer.concat(chunks).toString('utf8'),
        key,
        at: performance.now(),
        closedByClient: false,
      };
      requests.push(seen);
      response.once('close', () => {
        if (!response.writableFinished) seen.closedByClient = true;
      });
      void Promise.resolve(handler(seen, response)).catch(() => response.destroy());
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const origin = `http://127.0.0.1:${port}`;
  return {
    url: `${origin}/snapshot`,
    origin,
    port,
    requests,
    posts: () => requests.filter((request) => request.method === 'POST'),
    maxConcurrentPerKey: () => maxConcurrent,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Answers after `ms`, unless the client went away first. */
export function after(ms: number, response: ServerResponse, answer: () => void): void {
  const timer = setTimeout(() => {
    if (!response.destroyed) answer();
  }, ms);
  response.once('close', () => clearTimeout(timer));
}
