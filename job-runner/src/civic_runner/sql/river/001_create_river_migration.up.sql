-- River main line, version 1. `__SCHEMA__.` is replaced by the quoted target schema.
CREATE TABLE __SCHEMA__.river_migration (
  id bigserial PRIMARY KEY,
  created_at timestamptz NOT NULL DEFAULT now(),
  version bigint NOT NULL,
  CONSTRAINT version CHECK (version >= 1)
);

CREATE UNIQUE INDEX ON __SCHEMA__.river_migration USING btree (version);
