ALTER TABLE __SCHEMA__.river_job ALTER COLUMN args DROP NOT NULL;
ALTER TABLE __SCHEMA__.river_job ALTER COLUMN metadata DROP NOT NULL;
ALTER TABLE __SCHEMA__.river_job ALTER COLUMN metadata DROP DEFAULT;
-- An enum value cannot be removed safely, so `pending` stays (as River's own down migration does).
ALTER TABLE __SCHEMA__.river_job DROP CONSTRAINT finalized_or_finalized_at_null;
ALTER TABLE __SCHEMA__.river_job ADD CONSTRAINT finalized_or_finalized_at_null CHECK (
  (state IN ('cancelled', 'completed', 'discarded') AND finalized_at IS NOT NULL) OR finalized_at IS NULL);

CREATE OR REPLACE FUNCTION __SCHEMA__.river_job_notify() RETURNS trigger AS $$
BEGIN
  IF NEW.state = 'available' THEN
    PERFORM pg_notify('river_insert', json_build_object('queue', NEW.queue)::text);
  END IF;
  RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER river_notify AFTER INSERT ON __SCHEMA__.river_job
  FOR EACH ROW EXECUTE PROCEDURE __SCHEMA__.river_job_notify();

DROP TABLE __SCHEMA__.river_queue;

ALTER TABLE __SCHEMA__.river_leader
  ALTER COLUMN name DROP DEFAULT,
  DROP CONSTRAINT name_length,
  ADD CONSTRAINT name_length CHECK (char_length(name) > 0 AND char_length(name) < 128);
