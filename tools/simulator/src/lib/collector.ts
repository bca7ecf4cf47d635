import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** One distinct report the collector received (the first copy of each Idempotency-Key). */
export interface ReceivedReport {
  idempotencyKey: string;
  receivedAt: Date;
  /** The parsed JSON body. */
  body: unknown;
  /** Copies received with this key, the first included. */
  copies: number;
}

export interface CollectorStats {
  /** Every POST, whatever became of it. */
  posts: number;
  /** Distinct reports stored. */
  accepted: number;
  /** POSTs whose key was already stored: a redelivery, acknowledged and not counted again. */
  duplicates: number;
  /** POSTs refused with 503 on purpose (--chaos), before storing anything. */
  refused: number;
  /** POSTs stored whose acknowledgement was replaced by a 500 on purpose (--chaos). */
  acknowledgementsDropped: number;
  /** POSTs without an Idempotency-Key or with a body that is not JSON. */
  malformed: number;
}

export interface CollectorOptions {
  /** Share of POSTs answered 503 without storing (the sender must retry). */
  refuseRate?: number;
  /**
   * Share of POSTs stored but answered 500, as if the acknowledgement were lost: the sender
   * retries a report the collector already has, which the Idempotency-Key must deduplicate.
   */
  dropAcknowledgementRate?: number;
  /** Random numbers for the two rates (tests pass a fixed sequence). */
  random?: () => number;
}

const MAX_BODY_BYTES = 1_000_000;

/**
 * The telemetry receiver for the simulation: HTTP on loopback, stores what it receives,
 * deduplicates by Idempotency-Key. It stands in for coder's telemetry server; unlike it, it
 * counts exactly what arrived so the simulator can balance the account.
 */
export class TelemetryCollector {
  private readonly reports = new Map<string, ReceivedReport>();
  private readonly counters: CollectorStats = {
    posts: 0,
    accepted: 0,
    duplicates: 0,
    refused: 0,
    acknowledgementsDropped: 0,
    malformed: 0,
  };
  private readonly random: () => number;
  private closing: Promise<void> | undefined;
  private outage = false;

  private constructor(
    private readonly server: Server,
    private readonly options: CollectorOptions,
  ) {
    this.random = options.random ?? Math.random;
  }

  static async start(options: CollectorOptions = {}): Promise<TelemetryCollector> {
    const server = createServer();
    const collector = new TelemetryCollector(server, options);
    server.on('request', (request: IncomingMessage, response: ServerResponse) =>
      collector.handle(request, response),
    );
    // Keep-alive sockets would hold close() open until they time out.
    server.keepAliveTimeout = 1_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    return collector;
  }

  /** Where to POST reports, e.g. http://127.0.0.1:41234/snapshot. */
  get url(): string {
    const { port } = this.server.address() as AddressInfo;
    return `http://127.0.0.1:${port}/snapshot`;
  }

  /** Stops the chaos: from now on every POST is answered truthfully. */
  stopChaos(): void {
    this.options.refuseRate = 0;
    this.options.dropAcknowledgementRate = 0;
    this.outage = false;
  }

  /**
   * --chaos: a receiver outage. While on, every POST is refused with 503 before anything is
   * stored (counted in `refused`), so every delivery fails until it ends.
   */
  setOutage(on: boolean): void {
    this.outage = on;
  }

  /** Distinct reports in the order they first arrived. */
  received(): ReceivedReport[] {
    return [...this.reports.values()];
  }

  stats(): CollectorStats {
    return { ...this.counters };
  }

  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
    return this.closing;
  }

  private handle(request: IncomingMessage, response: ServerResponse): void {
    if (request.method !== 'POST') {
      respond(response, 405, { error: 'POST a report' });
      return;
    }
    readBody(request).then(
      (raw) => this.accept(request, raw, response),
      () => respond(response, 413, { error: `body larger than ${MAX_BODY_BYTES} bytes` }),
    );
  }

  private accept(request: IncomingMessage, raw: string, response: ServerResponse): void {
    this.counters.posts++;
    const key = request.headers['idempotency-key'];
    let body: unknown;
    try {
      body = JSON.parse(raw);
    } catch {
      body = undefined;
    }
    if (typeof key !== 'string' || key.length === 0 || body === undefined) {
      this.counters.malformed++;
      respond(response, 400, { error: 'an Idempotency-Key header and a JSON body are required' });
      return;
    }
    if (this.outage || this.random() < (this.options.refuseRate ?? 0)) {
      this.counters.refused++;
      respond(response, 503, { error: 'refused on purpose (--chaos)' });
      return;
    }
    const known = this.reports.get(key);
    if (known) {
      known.copies++;
      this.counters.duplicates++;
    } else {
      this.reports.set(key, { idempotencyKey: key, receivedAt: new Date(), body, copies: 1 });
      this.counters.accepted++;
    }
    if (this.random() < (this.options.dropAcknowledgementRate ?? 0)) {
      this.counters.acknowledgementsDropped++;
      respond(response, 500, { error: 'stored, acknowledgement dropped on purpose (--chaos)' });
      return;
    }
    respond(response, 202, { accepted: true, duplicate: known !== undefined });
  }
}

function readBody(request: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    request.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new Error('too large'));
        request.destroy();
        return;
      }
      chunks.push(chunk);
    });
    request.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    request.on('error', reject);
  });
}

function respond(response: ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { 'content-type': 'application/json' });
  response.end(JSON.stringify(body));
}
