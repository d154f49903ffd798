-- River main line, version 8 down: a no-op on PostgreSQL (see the up migration); reverting it only
-- removes the ('main', 8) row.
SELECT 1;
