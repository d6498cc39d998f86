-- One row per run of a stage (ingest included): what it did and how it ended.

CREATE SEQUENCE runs_seq;

CREATE TABLE runs (
    id          BIGINT PRIMARY KEY DEFAULT nextval('runs_seq'),
    stage       VARCHAR NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    status      VARCHAR NOT NULL,               -- running, succeeded, failed, interrupted
    counts      JSON,
    error       VARCHAR
);

CREATE INDEX runs_stage_started ON runs (stage, started_at);
