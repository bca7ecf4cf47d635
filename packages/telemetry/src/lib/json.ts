// One rule for counters in JSON, kept where the tracker (the lowest layer that writes them)
// can use it too; re-exported here because the report's JSON is telemetry's API.
export { jsonInteger, parseJsonInteger, type JsonInteger } from '@usagekit/boundary-usage';
