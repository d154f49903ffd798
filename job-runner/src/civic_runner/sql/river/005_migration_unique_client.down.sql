DO $body$
BEGIN
  IF (SELECT to_regclass('__SCHEMA__.river_migration') IS NOT NULL) THEN
    IF EXISTS (SELECT 1 FROM __SCHEMA__.river_migration WHERE line <> 'main') THEN
      RAISE EXCEPTION 'non-main migration lines are present; version 5 cannot be reverted without losing them';
    END IF;
    ALTER TABLE __SCHEMA__.river_migration RENAME TO river_migration_old;
    CREATE TABLE __SCHEMA__.river_migration (
      id bigserial PRIMARY KEY,
      created_at timestamptz NOT NULL DEFAULT now(),
      version bigint NOT NULL,
      CONSTRAINT version CHECK (version >= 1)
    );
    CREATE UNIQUE INDEX ON __SCHEMA__.river_migration USING btree (version);
    INSERT INTO __SCHEMA__.river_migration (created_at, version)
      SELECT created_at, version FROM __SCHEMA__.river_migration_old;
    DROP TABLE __SCHEMA__.river_migration_old;
  END IF;
END;
$body$ LANGUAGE plpgsql;

ALTER TABLE __SCHEMA__.river_job DROP COLUMN unique_key;
DROP TABLE __SCHEMA__.river_client_queue;
DROP TABLE __SCHEMA__.river_client;
