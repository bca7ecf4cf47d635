/**
 * Record and replay: the raw node-postgres baselines run exactly what the store sent.
 *
 * A baseline is only a baseline if it does the store's work. Instead of a hand-kept copy of
 * the store's SQL (which every change to the store silently outdated), the bench records what
 * the store hands to node-postgres for one call (`pg.Client#query`, which adapter-pg uses for
 * every statement, BEGIN and COMMIT included) and replays the same statements with the same
 * parameters, changing only the values that identify the call (the replica id, the sequence,
 * the ids a flush carries). Whatever the store's default becomes, the raw contenders follow.
 */
import { Client, type Pool, type PoolClient } from 'pg';
import { inTransaction } from './raw-pg.js';

export interface CapturedStatement {
  text: string;
  values: unknown[];
  /** Set when the statement was sent as a named (prepared) statement. */
  name?: string;
}

/** One public-API call as it went over the wire. */
export interface RecordedCall {
  /** The statements between BEGIN and COMMIT, or the autocommit statement(s), in order. */
  statements: CapturedStatement[];
  /** Whether the store wrapped them in BEGIN … COMMIT. */
  transaction: boolean;
}

/** Collapses whitespace, for printing statements. */
export function normalizeSql(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}

/** Runs `work` while recording every query node-postgres sends, in order. */
export async function recordQueries(work: () => Promise<void>): Promise<CapturedStatement[]> {
  const captured: CapturedStatement[] = [];
  const prototype = Client.prototype as unknown as { query: (...args: unknown[]) => unknown };
  const original = prototype.query;
  prototype.query = function recordingQuery(this: unknown, ...args: unknown[]) {
    const [first, second] = args;
    if (typeof first === 'string') {
      captured.push({ text: first, values: Array.isArray(second) ? second : [] });
    } else if (first && typeof first === 'object' && 'text' in first) {
      const config = first as { text: string; values?: unknown[]; name?: string };
      captured.push({
        text: config.text,
        values: config.values ?? (Array.isArray(second) ? second : []),
        ...(config.name ? { name: config.name } : {}),
      });
    }
    return original.apply(this, args);
  };
  try {
    await work();
  } finally {
    prototype.query = original;
  }
  return captured;
}

const TRANSACTION_CONTROL = /^\s*(BEGIN|START\s+TRANSACTION|COMMIT|END|ROLLBACK)\b/i;

/** Records one call: its statements without BEGIN/COMMIT, and whether they ran in a transaction. */
export function recordedCall(sent: readonly CapturedStatement[]): RecordedCall {
  return {
    statements: sent.filter((s) => !TRANSACTION_CONTROL.test(s.text)),
    transaction: sent.some((s) => /^\s*(BEGIN|START\s+TRANSACTION)\b/i.test(s.text)),
  };
}

export async function recordCall(work: () => Promise<unknown>): Promise<RecordedCall> {
  return recordedCall(
    await recordQueries(async () => {
      await work();
    }),
  );
}

/** Value replacements: every parameter equal to `from` becomes `to`. */
export type Substitutions = ReadonlyArray<readonly [from: unknown, to: unknown]>;

function sameValue(value: unknown, from: unknown): boolean {
  if (Array.isArray(from)) {
    return (
      Array.isArray(value) &&
      value.length === from.length &&
      value.every((item, i) => String(item) === String(from[i]))
    );
  }
  if (Array.isArray(value) || (typeof value === 'object' && value !== null)) return false;
  return value !== null && value !== undefined && String(value) === String(from);
}

export function substitute(values: readonly unknown[], subs: Substitutions): unknown[] {
  return values.map((value) => {
    for (const [from, to] of subs) if (sameValue(value, from)) return to;
    return value;
  });
}

/** Whether every `from` of `subs` occurs among the call's parameters (else the replay would not vary). */
export function missingSubstitutions(call: RecordedCall, subs: Substitutions): unknown[] {
  return subs
    .map(([from]) => from)
    .filter((from) => !call.statements.some((s) => s.values.some((v) => sameValue(v, from))));
}

export interface ReplayOptions {
  /** Send each statement as a named prepared statement `${prepare}_${index}`. */
  prepare?: string;
}

/**
 * Sends the recorded statements again, with the substitutions applied, in a transaction when
 * the store used one; resolves to the last statement's first row.
 */
export async function replayCall(
  pool: Pool,
  call: RecordedCall,
  subs: Substitutions,
  options: ReplayOptions = {},
): Promise<Record<string, unknown> | undefined> {
  const send = async (client: Pool | PoolClient) => {
    let row: Record<string, unknown> | undefined;
    for (const [i, statement] of call.statements.entries()) {
      const values = substitute(statement.values, subs);
      const result = await client.query<Record<string, unknown>>(
        options.prepare
          ? { name: `${options.prepare}_${i}`, text: statement.text, values }
          : { text: statement.text, values },
      );
      row = result.rows[0];
    }
    return row;
  };
  return call.transaction ? inTransaction(pool, send) : send(pool);
}

/** Whether the store sent any statement of the call as a named (prepared) statement. */
export function storePrepared(call: RecordedCall): boolean {
  return call.statements.some((s) => s.name !== undefined);
}
