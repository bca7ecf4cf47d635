-- CreateTable
CREATE TABLE "demo_notes" (
    "id" UUID NOT NULL,
    "workspace_id" UUID NOT NULL,
    "author_id" UUID NOT NULL,
    "text" TEXT NOT NULL,
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "demo_notes_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "demo_notes_workspace_created_idx" ON "demo_notes"("workspace_id", "created_at");

