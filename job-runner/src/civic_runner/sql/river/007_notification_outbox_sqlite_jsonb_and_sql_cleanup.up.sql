-- River main line, version 7 (River 0.40): notification outbox (used by SQLite only),
-- drop the never-used client tables, default max_attempts 25.
CREATE TABLE __SCHEMA__.river_notification (
  id bigserial PRIMARY KEY,
  created_at timestamptz NOT NULL DEFAULT now(),
  payload text NOT NULL,
  topic text NOT NULL,
  CONSTRAINT topic_length CHECK (length(topic) > 0 AND length(topic) < 128)
);
CREATE INDEX river_notification_created_at_idx ON __SCHEMA__.river_notification (created_at);
CREATE INDEX river_notification_topic_id_idx ON __SCHEMA__.river_notification (topic, id);

DROP TABLE __SCHEMA__.river_client_queue;
DROP TABLE __SCHEMA__.river_client;

ALTER TABLE __SCHEMA__.river_job ALTER COLUMN max_attempts SET DEFAULT 25;
ALTER TABLE __SCHEMA__.river_queue ALTER COLUMN updated_at SET DEFAULT CURRENT_TIMESTAMP;
