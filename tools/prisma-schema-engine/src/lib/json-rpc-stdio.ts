import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';

/**
 * JSON-RPC 2.0 over stdio, one message per line, as Prisma's CLI speaks it to the native
 * schema engine (prisma-engines schema-engine/cli json_rpc_stdio.rs; the CLI's
 * SchemaEngineCLI writes `JSON.stringify(request) + '\n'` and reads stdout line by line).
 * Requests are handled one at a time, in order: the engine is a single mutable object, and
 * the CLI never has two requests in flight anyway. While one runs, lines keep being read,
 * because the engine may be waiting for the answer to a request of its own (`print`).
 */
export interface RpcError {
  code: number;
  message: string;
  data?: unknown;
}

export type RpcHandler = (method: string, params: unknown) => Promise<unknown>;

interface Message {
  jsonrpc?: string;
  id?: number | string | null;
  method?: string;
  params?: unknown;
  result?: unknown;
  error?: RpcError;
}

export class RpcFailure extends Error {
  constructor(readonly rpcError: RpcError) {
    super(rpcError.message);
  }
}

export class StdioJsonRpc {
  private queue: Promise<void> = Promise.resolve();
  private nextOutgoingId = 1;
  private readonly pending = new Map<
    number,
    { resolve: (value: unknown) => void; reject: (error: Error) => void }
  >();

  constructor(
    private readonly input: Readable,
    private readonly output: Writable,
    private readonly handle: RpcHandler,
    private readonly toRpcError: (error: unknown) => RpcError,
  ) {}

  /** Serves until the input ends (the CLI closes stdin to stop the engine) and work drains. */
  serve(): Promise<void> {
    const lines = createInterface({ input: this.input, crlfDelay: Infinity });
    lines.on('line', (line) => this.receive(line));
    return new Promise((resolve) => {
      lines.on('close', () => {
        for (const { reject } of this.pending.values()) reject(new Error('stdin closed'));
        this.pending.clear();
        resolve(this.queue);
      });
    });
  }

  /** Sends a request to the client and waits for its answer, at most `timeoutMs`. */
  call(method: string, params: unknown, timeoutMs: number): Promise<unknown> {
    const id = this.nextOutgoingId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`no answer to ${method} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (value) => {
          clearTimeout(timer);
          resolve(value);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      this.send({ jsonrpc: '2.0', id, method, params });
    });
  }

  private receive(line: string): void {
    if (line.trim() === '') return;
    let message: Message;
    try {
      message = JSON.parse(line) as Message;
    } catch {
      this.send({ jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error' } });
      return;
    }
    if (message.method === undefined) {
      this.settleOutgoing(message);
      return;
    }
    const { id, method, params } = message;
    this.queue = this.queue.then(async () => {
      try {
        const result = await this.handle(method, params);
        if (id !== undefined) this.send({ jsonrpc: '2.0', id, result: result ?? null });
      } catch (error) {
        if (id !== undefined) this.send({ jsonrpc: '2.0', id, error: this.toRpcError(error) });
      }
    });
  }

  private settleOutgoing(message: Message): void {
    const waiter = typeof message.id === 'number' ? this.pending.get(message.id) : undefined;
    if (!waiter) return;
    this.pending.delete(message.id as number);
    if (message.error) waiter.reject(new RpcFailure(message.error));
    else waiter.resolve(message.result);
  }

  private send(message: Message): void {
    this.output.write(`${JSON.stringify(message)}\n`);
  }
}
