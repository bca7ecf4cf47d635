-- CreateTable
CREATE TABLE "boundary_usage_flush_sequences" (
    "replica_id" UUID NOT NULL,
    "last_sequence" BIGINT NOT NULL,
    "updated_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "boundary_usage_flush_sequences_pkey" PRIMARY KEY ("replica_id")
);

-- CreateIndex
CREATE INDEX "idx_boundary_usage_flush_sequences_updated_at" ON "boundary_usage_flush_sequences"("updated_at");

COMMENT ON TABLE "boundary_usage_flush_sequences" IS 'The last flush sequence each replica applied. Not touched by the cutover, so a flush retried after an ambiguous commit is recognised and applied at most once.';
COMMENT ON COLUMN "boundary_usage_flush_sequences"."replica_id" IS 'The replica that flushed.';
COMMENT ON COLUMN "boundary_usage_flush_sequences"."last_sequence" IS 'The highest flush sequence applied for this replica; flushes with a sequence not above it are duplicates.';
COMMENT ON COLUMN "boundary_usage_flush_sequences"."updated_at" IS 'When the last flush was applied (for retention).';
