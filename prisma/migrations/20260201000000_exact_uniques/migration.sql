-- CreateTable
CREATE TABLE "boundary_usage_ids" (
    "kind" TEXT NOT NULL,
    "id" UUID NOT NULL,

    CONSTRAINT "boundary_usage_ids_pkey" PRIMARY KEY ("kind","id")
);

-- Not expressible in schema.prisma; `prisma migrate diff` ignores CHECK constraints.
ALTER TABLE "boundary_usage_ids" ADD CONSTRAINT "boundary_usage_ids_kind_check" CHECK ("kind" IN ('workspace', 'user'));

COMMENT ON TABLE "boundary_usage_ids" IS 'Distinct workspace and user ids seen by any replica in the current period; counted and deleted by the cutover together with boundary_usage_stats.';
COMMENT ON COLUMN "boundary_usage_ids"."kind" IS 'workspace or user.';
COMMENT ON COLUMN "boundary_usage_ids"."id" IS 'The workspace id or user id.';
