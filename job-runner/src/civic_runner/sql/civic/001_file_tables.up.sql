-- Civic OS file tables, as Civic OS defines them (v0-5-0, v0-10-8, v0-39-0), minus what belongs
-- to the rest of Civic OS (the users foreign key, RLS policies, RPCs, grants).
-- Applied only on databases where these tables do not exist yet (see migrate.py).

CREATE OR REPLACE FUNCTION __SCHEMA__.civic_uuid_v7() RETURNS uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  -- 48-bit Unix time in milliseconds, then version 7 and RFC 4122 variant bits over random bytes.
  ms bigint := floor(extract(epoch FROM clock_timestamp()) * 1000);
  raw bytea := decode(lpad(to_hex(ms), 12, '0'), 'hex') || substring(uuid_send(gen_random_uuid()) FROM 7 FOR 10);
BEGIN
  raw := set_byte(raw, 6, (get_byte(raw, 6) & 15) | 112);
  raw := set_byte(raw, 8, (get_byte(raw, 8) & 63) | 128);
  RETURN encode(raw, 'hex')::uuid;
END;
$$;

CREATE TABLE __SCHEMA__.files (
  id uuid PRIMARY KEY DEFAULT __SCHEMA__.civic_uuid_v7(),
  entity_type text NOT NULL,
  entity_id text NOT NULL,
  file_name text NOT NULL,
  file_type text NOT NULL,
  file_size integer NOT NULL,
  s3_key_prefix text GENERATED ALWAYS AS (entity_type || '/' || entity_id || '/' || id) STORED,
  s3_original_key text NOT NULL,
  s3_thumbnail_small_key text,
  s3_thumbnail_medium_key text,
  s3_thumbnail_large_key text,
  thumbnail_status text DEFAULT 'pending'
    CHECK (thumbnail_status IN ('pending', 'processing', 'completed', 'failed', 'not_applicable')),
  thumbnail_error text,
  created_by uuid,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  s3_bucket varchar(255) NOT NULL DEFAULT 'civic-os-files',
  property_name text
);
CREATE INDEX idx_files_entity ON __SCHEMA__.files (entity_type, entity_id);
CREATE INDEX idx_files_thumbnail_status ON __SCHEMA__.files (thumbnail_status, created_at)
  WHERE thumbnail_status IN ('pending', 'failed');
CREATE INDEX idx_files_created_at ON __SCHEMA__.files (created_at);

CREATE TABLE __SCHEMA__.file_upload_requests (
  id uuid PRIMARY KEY DEFAULT __SCHEMA__.civic_uuid_v7(),
  entity_type text NOT NULL,
  entity_id text NOT NULL,
  file_name text NOT NULL,
  file_type text NOT NULL,
  status text DEFAULT 'pending' CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
  presigned_url text,
  s3_key text,
  file_id uuid,
  error_message text,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_file_upload_requests_status ON __SCHEMA__.file_upload_requests (status, created_at);
