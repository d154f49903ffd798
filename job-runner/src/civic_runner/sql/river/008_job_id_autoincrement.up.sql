-- River main line, version 8 (River 0.48): job_id_autoincrement. On SQLite River rebuilds river_job
-- there; on PostgreSQL the migration has nothing to do, and River's own up and down are a no-op.
-- Applying it only records ('main', 8) in river_migration, so that River 0.48+'s migrator and
-- `validate` see the database as current.
SELECT 1;
