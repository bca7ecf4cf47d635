-- Flush sequences per writer (issue 11, item 4). A sequence was kept per replica id, so a
-- second process with the same replica id (a blue/green overlap) or one whose clock read
-- earlier (a VM restored from a snapshot) had every flush refused as "already applied". Every
-- tracker now has a random writer id and its own sequence row; the stats row remembers which
-- writer's flush inserted it, so a duplicate can only be matched to its own writer.
--
-- Rows written before this migration keep the nil uuid as their writer: no tracker uses it,
-- so they are inert and retention deletes them like any other idle row.

-- AlterTable
ALTER TABLE "boundary_usage_flush_sequences" ADD COLUMN     "writer_id" UUID NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000';

-- AlterTable
ALTER TABLE "boundary_usage_flush_sequences" DROP CONSTRAINT "boundary_usage_flush_sequences_pkey",
ADD CONSTRAINT "boundary_usage_flush_sequences_pkey" PRIMARY KEY ("replica_id", "writer_id");

-- AlterTable
ALTER TABLE "boundary_usage_stats" ADD COLUMN     "first_writer_id" UUID;

COMMENT ON TABLE "boundary_usage_flush_sequences" IS 'The last flush sequence each writer (one tracker instance) applied, per replica. Not touched by the cutover, so a flush retried after an ambiguous commit is recognised and applied at most once.';
COMMENT ON COLUMN "boundary_usage_flush_sequences"."writer_id" IS 'The tracker instance that flushed (random per process start); the nil uuid for rows written before writer ids and for callers that pass none.';
COMMENT ON COLUMN "boundary_usage_flush_sequences"."last_sequence" IS 'The highest flush sequence applied for this replica and writer; flushes of that writer with a sequence not above it are duplicates.';
COMMENT ON COLUMN "boundary_usage_stats"."first_writer_id" IS 'The writer whose flush (with first_sequence) created this row; NULL when the flush carried no sequence.';
