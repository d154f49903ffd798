DROP TABLE __SCHEMA__.river_job;
DROP FUNCTION __SCHEMA__.river_job_notify;
DROP TYPE __SCHEMA__.river_job_state;
DROP TABLE __SCHEMA__.river_leader;
