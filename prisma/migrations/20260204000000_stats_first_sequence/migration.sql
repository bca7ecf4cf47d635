-- AlterTable
ALTER TABLE "boundary_usage_stats" ADD COLUMN     "first_sequence" BIGINT;

COMMENT ON COLUMN "boundary_usage_stats"."first_sequence" IS 'The flush sequence whose INSERT created this row (NULL when the flush carried none). A flush retried after an ambiguous commit learns from it whether it was the one that started the period.';
