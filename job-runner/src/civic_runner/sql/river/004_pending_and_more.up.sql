-- River main line, version 4: NOT NULL args/metadata, the `pending` state, river_queue,
-- and no more insert trigger (clients notify in their own transaction instead).
ALTER TABLE __SCHEMA__.river_job ALTER COLUMN args SET DEFAULT '{}';
UPDATE __SCHEMA__.river_job SET args = '{}' WHERE args IS NULL;
ALTER TABLE __SCHEMA__.river_job ALTER COLUMN args SET NOT NULL;
ALTER TABLE __SCHEMA__.river_job ALTER COLUMN args DROP DEFAULT;

ALTER TABLE __SCHEMA__.river_job ALTER COLUMN metadata SET DEFAULT '{}';
UPDATE __SCHEMA__.river_job SET metadata = '{}' WHERE metadata IS NULL;
ALTER TABLE __SCHEMA__.river_job ALTER COLUMN metadata SET NOT NULL;

ALTER TYPE __SCHEMA__.river_job_state ADD VALUE IF NOT EXISTS 'pending' AFTER 'discarded';

ALTER TABLE __SCHEMA__.river_job DROP CONSTRAINT finalized_or_finalized_at_null;
ALTER TABLE __SCHEMA__.river_job ADD CONSTRAINT finalized_or_finalized_at_null CHECK (
  (finalized_at IS NULL AND state NOT IN ('cancelled', 'completed', 'discarded')) OR
  (finalized_at IS NOT NULL AND state IN ('cancelled', 'completed', 'discarded')));

DROP TRIGGER river_notify ON __SCHEMA__.river_job;
DROP FUNCTION __SCHEMA__.river_job_notify;

CREATE TABLE __SCHEMA__.river_queue (
  name text PRIMARY KEY NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  paused_at timestamptz,
  updated_at timestamptz NOT NULL
);

ALTER TABLE __SCHEMA__.river_leader
  ALTER COLUMN name SET DEFAULT 'default',
  DROP CONSTRAINT name_length,
  ADD CONSTRAINT name_length CHECK (name = 'default');
