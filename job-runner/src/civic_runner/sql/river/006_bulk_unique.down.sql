DROP INDEX __SCHEMA__.river_job_unique_idx;
ALTER TABLE __SCHEMA__.river_job DROP COLUMN unique_states;
CREATE UNIQUE INDEX IF NOT EXISTS river_job_kind_unique_key_idx ON __SCHEMA__.river_job (kind, unique_key)
  WHERE unique_key IS NOT NULL;
DROP FUNCTION __SCHEMA__.river_job_state_in_bitmask;
