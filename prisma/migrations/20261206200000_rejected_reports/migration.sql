-- Dead letters in the outbox (issue 18, item 3). A report the receiver refuses for good (400,
-- 401, 403, 404, 410, 413, 422, …) was retried forever, with nothing but a warn log and
-- last_error to show it. Permanent refusals are now counted, and after rejectAfterRefusals of
-- them the report is rejected: kept (retention deletes delivered reports only), never due
-- again, counted in a metric, until an operator sends it again (retryRejectedReports).
-- A report is pending while delivered_at and rejected_at are both NULL.

-- AlterTable
ALTER TABLE "telemetry_reports" ADD COLUMN     "rejected_at" TIMESTAMPTZ(6),
ADD COLUMN     "rejections" INTEGER NOT NULL DEFAULT 0;

COMMENT ON COLUMN "telemetry_reports"."rejected_at" IS 'When the report was set aside as rejected after repeated permanent refusals by the receiver (a dead letter); NULL otherwise. Rejected reports are kept and not retried until an operator sends them again.';
COMMENT ON COLUMN "telemetry_reports"."rejections" IS 'Permanent refusals (e.g. 400, 413, 422) since the report was written or last sent again by an operator.';
