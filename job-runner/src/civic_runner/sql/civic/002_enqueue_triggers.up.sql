-- Enqueue triggers, with the kinds, queues, priority, max_attempts and args Civic OS uses
-- (insert_s3_presign_job / insert_thumbnail_job). Unlike Civic OS's triggers they also notify
-- River's insert channel in the same transaction, so idle runners wake at once instead of polling.

CREATE OR REPLACE FUNCTION __SCHEMA__.civic_enqueue_s3_presign() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO __SCHEMA__.river_job (kind, args, queue, priority, max_attempts)
  VALUES ('s3_presign',
          jsonb_build_object('request_id', NEW.id::text, 'file_name', NEW.file_name,
                             'file_type', NEW.file_type, 'entity_type', NEW.entity_type,
                             'entity_id', NEW.entity_id),
          's3_signer', 1, 25);
  PERFORM pg_notify(__CHANNEL__, '{"queue": "s3_signer"}');
  RETURN NEW;
END;
$$;

CREATE TRIGGER insert_s3_presign_job_trigger AFTER INSERT ON __SCHEMA__.file_upload_requests
  FOR EACH ROW EXECUTE FUNCTION __SCHEMA__.civic_enqueue_s3_presign();

CREATE OR REPLACE FUNCTION __SCHEMA__.civic_enqueue_thumbnail() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.thumbnail_status = 'pending' THEN
    INSERT INTO __SCHEMA__.river_job (kind, args, queue, priority, max_attempts)
    VALUES ('thumbnail_generate', jsonb_build_object('file_id', NEW.id::text), 'thumbnails', 1, 25);
    PERFORM pg_notify(__CHANNEL__, '{"queue": "thumbnails"}');
  END IF;
  RETURN NEW;
END;
$$;

CREATE TRIGGER insert_thumbnail_job_trigger AFTER INSERT ON __SCHEMA__.files
  FOR EACH ROW EXECUTE FUNCTION __SCHEMA__.civic_enqueue_thumbnail();
