-- CreateTable
CREATE TABLE "boundary_usage_stats" (
    "replica_id" UUID NOT NULL,
    "unique_workspaces_count" BIGINT NOT NULL DEFAULT 0,
    "unique_users_count" BIGINT NOT NULL DEFAULT 0,
    "allowed_requests" BIGINT NOT NULL DEFAULT 0,
    "denied_requests" BIGINT NOT NULL DEFAULT 0,
    "window_start" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "boundary_usage_stats_pkey" PRIMARY KEY ("replica_id")
);

-- CreateTable
CREATE TABLE "telemetry_locks" (
    "event_type" TEXT NOT NULL,
    "period_ending_at" TIMESTAMPTZ(6) NOT NULL,

    CONSTRAINT "telemetry_locks_pkey" PRIMARY KEY ("event_type","period_ending_at")
);

-- CreateTable
CREATE TABLE "telemetry_reports" (
    "report_id" UUID NOT NULL,
    "event_type" TEXT NOT NULL,
    "period_starting_at" TIMESTAMPTZ(6) NOT NULL,
    "period_duration_ms" BIGINT NOT NULL,
    "payload" JSONB NOT NULL,
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "last_error" TEXT,
    "next_attempt_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "delivered_at" TIMESTAMPTZ(6),

    CONSTRAINT "telemetry_reports_pkey" PRIMARY KEY ("report_id")
);

-- CreateIndex
CREATE INDEX "idx_telemetry_locks_period_ending_at" ON "telemetry_locks"("period_ending_at");

-- CreateIndex
CREATE INDEX "idx_telemetry_reports_pending" ON "telemetry_reports"("delivered_at", "created_at");

-- CreateIndex
CREATE UNIQUE INDEX "telemetry_reports_event_type_period_key" ON "telemetry_reports"("event_type", "period_starting_at");

-- Comments (not expressible in schema.prisma; `prisma migrate diff` ignores them)
COMMENT ON TABLE "boundary_usage_stats" IS 'Per-replica boundary usage counted since the last telemetry cutover. Writers upsert their own row under a shared advisory lock; the cutover deletes and sums every row under the exclusive lock.';
COMMENT ON COLUMN "boundary_usage_stats"."replica_id" IS 'The replica that owns this row; one row per replica.';
COMMENT ON COLUMN "boundary_usage_stats"."unique_workspaces_count" IS 'Distinct workspaces this replica saw in the current period (cumulative, replaced on update).';
COMMENT ON COLUMN "boundary_usage_stats"."unique_users_count" IS 'Distinct users this replica saw in the current period (cumulative, replaced on update).';
COMMENT ON COLUMN "boundary_usage_stats"."allowed_requests" IS 'Allowed requests this replica counted in the current period (deltas are added).';
COMMENT ON COLUMN "boundary_usage_stats"."denied_requests" IS 'Denied requests this replica counted in the current period (deltas are added).';
COMMENT ON COLUMN "boundary_usage_stats"."window_start" IS 'When the first flush of this period inserted the row; never changed by updates.';
COMMENT ON COLUMN "boundary_usage_stats"."updated_at" IS 'When the row was last written.';
COMMENT ON TABLE "telemetry_locks" IS 'Election: the replica that inserts (event_type, period_ending_at) first reports that period.';
COMMENT ON COLUMN "telemetry_locks"."event_type" IS 'The kind of report, e.g. boundary_usage_summary.';
COMMENT ON COLUMN "telemetry_locks"."period_ending_at" IS 'The period claimed: the report time floored to the snapshot frequency (coder''s naming).';
COMMENT ON TABLE "telemetry_reports" IS 'Outbox: reports written in the cutover transaction, delivered afterwards with retries.';
COMMENT ON COLUMN "telemetry_reports"."report_id" IS 'Stable id of the report, sent as the Idempotency-Key so the receiver can deduplicate.';
COMMENT ON COLUMN "telemetry_reports"."event_type" IS 'The kind of report, e.g. boundary_usage_summary.';
COMMENT ON COLUMN "telemetry_reports"."period_starting_at" IS 'Start of the period the report covers (the claimed period).';
COMMENT ON COLUMN "telemetry_reports"."period_duration_ms" IS 'Length of the nominal period in milliseconds.';
COMMENT ON COLUMN "telemetry_reports"."payload" IS 'The snapshot JSON as it is sent.';
COMMENT ON COLUMN "telemetry_reports"."created_at" IS 'When the cutover wrote the report.';
COMMENT ON COLUMN "telemetry_reports"."attempts" IS 'Delivery attempts so far.';
COMMENT ON COLUMN "telemetry_reports"."last_error" IS 'Why the last delivery attempt failed, if it did.';
COMMENT ON COLUMN "telemetry_reports"."next_attempt_at" IS 'Earliest time of the next delivery attempt (backoff).';
COMMENT ON COLUMN "telemetry_reports"."delivered_at" IS 'When the receiver acknowledged the report; NULL while pending.';
