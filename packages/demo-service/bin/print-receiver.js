#!/usr/bin/env node
// A telemetry receiver for trying the demo service: prints every report it is sent (one JSON
// line each, with its Idempotency-Key) and acknowledges it with 200. Not for production: a
// real receiver stores each report once per key. Usage: node bin/print-receiver.js [port]
const { createServer } = require('node:http');

const port = Number(process.argv[2] ?? 9000);
createServer((request, response) => {
  let body = '';
  request.on('data', (chunk) => (body += chunk));
  request.on('end', () => {
    const report = JSON.parse(body || '{}');
    const summary = report.boundary_usage_summary;
    process.stdout.write(
      `${JSON.stringify({
        receivedAt: new Date().toISOString(),
        idempotencyKey: request.headers['idempotency-key'],
        periodStart: summary?.period_start,
        allowed: summary?.allowed_requests,
        denied: summary?.denied_requests,
        uniqueWorkspaces: summary?.unique_workspaces,
        uniqueUsers: summary?.unique_users,
      })}\n`,
    );
    response.writeHead(200).end('ok');
  });
}).listen(port, '127.0.0.1', () =>
  process.stderr.write(`receiver listening on http://127.0.0.1:${port}/\n`),
);
