import { InvalidInputError } from '@usagekit/boundary-usage';
import type { OutboxReport, Sink } from './sink.js';

export interface JsonLinesSinkOptions {
  /** Where the lines go; default process.stdout. */
  stream?: NodeJS.WritableStream;
}

/**
 * Writes each report's payload as one line of JSON, for development and air-gapped setups
 * (pipe it to a file and ship it by hand). A report counts as delivered once the stream has
 * accepted the line.
 */
export class JsonLinesSink implements Sink {
  private readonly stream: NodeJS.WritableStream;

  constructor(options: JsonLinesSinkOptions = {}) {
    const stream = options.stream ?? process.stdout;
    if (typeof (stream as Partial<NodeJS.WritableStream>)?.write !== 'function') {
      throw new InvalidInputError('stream', stream, 'a writable stream');
    }
    this.stream = stream;
  }

  send(report: OutboxReport): Promise<void> {
    return new Promise((resolve, reject) => {
      // Inside the promise: a payload JSON.stringify refuses rejects, it does not throw.
      const line = `${JSON.stringify(report.payload)}\n`;
      this.stream.write(line, (error) => (error ? reject(error) : resolve()));
    });
  }
}
