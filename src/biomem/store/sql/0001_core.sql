-- Memories as ingested, quarantined bad records, and source watermarks.

CREATE TABLE memories (
    uid               VARCHAR PRIMARY KEY,      -- source || ':' || source_id
    source            VARCHAR NOT NULL,         -- 'postgres' or 'jsonl'
    source_id         VARCHAR NOT NULL,         -- the id the source gave it
    content           VARCHAR NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL,
    metadata          JSON NOT NULL,
    content_hash      VARCHAR NOT NULL,         -- over content, times and metadata
    revision          INTEGER NOT NULL DEFAULT 1,
    -- true when derived data (episodes, embeddings, ...) must be recomputed
    needs_recompute   BOOLEAN NOT NULL DEFAULT TRUE,
    first_ingested_at TIMESTAMPTZ NOT NULL,
    last_ingested_at  TIMESTAMPTZ NOT NULL
);

CREATE INDEX memories_created_at ON memories (created_at);

CREATE SEQUENCE quarantine_seq;

CREATE TABLE quarantine (
    id            BIGINT PRIMARY KEY DEFAULT nextval('quarantine_seq'),
    source        VARCHAR NOT NULL,             -- 'postgres' or 'jsonl'
    location      VARCHAR NOT NULL,             -- 'file.jsonl:17' or 'public.memories id=42'
    line_no       BIGINT,
    record_id     VARCHAR,
    reason        VARCHAR NOT NULL,
    raw           VARCHAR,                      -- an excerpt; invalid bytes escaped
    raw_hash      VARCHAR NOT NULL,
    first_seen_at TIMESTAMPTZ NOT NULL,
    last_seen_at  TIMESTAMPTZ NOT NULL,
    times_seen    INTEGER NOT NULL DEFAULT 1,
    UNIQUE (source, location, raw_hash)
);

CREATE TABLE ingest_watermarks (
    source_name VARCHAR PRIMARY KEY,            -- e.g. 'postgres:public.memories'
    updated_at  TIMESTAMPTZ NOT NULL,           -- (updated_at, last_id) of the last row read
    last_id     VARCHAR NOT NULL,
    rows_read   BIGINT NOT NULL DEFAULT 0,
    advanced_at TIMESTAMPTZ NOT NULL
);
