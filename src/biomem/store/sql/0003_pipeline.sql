-- The pipeline's derived data. Source memories are never changed by it:
-- everything here can be recomputed from `memories`.

-- Per memory: importance, strengths, access, fate.
CREATE TABLE memory_state (
    uid              VARCHAR PRIMARY KEY,
    importance       DOUBLE NOT NULL,          -- metadata.importance, default 0.5
    base_strength    DOUBLE NOT NULL,          -- set by consolidation
    strength         DOUBLE NOT NULL,          -- base_strength × homeostasis scale, in [0, 1]
    replay_strength  DOUBLE NOT NULL DEFAULT 0,
    fate             VARCHAR,                  -- cortical_transfer, hippocampal_retention, ...
    access_count     INTEGER NOT NULL DEFAULT 0,
    last_accessed_at TIMESTAMPTZ,
    updated_at       TIMESTAMPTZ NOT NULL
);

-- Short-term: the structured reading of each memory, by the LLM or the fallback.
CREATE TABLE enrichments (
    uid         VARCHAR PRIMARY KEY,
    revision    INTEGER NOT NULL,              -- the memory revision this describes
    source      VARCHAR NOT NULL,              -- 'llm' or 'fallback' (redone by the LLM later)
    model       VARCHAR,
    goal        VARCHAR NOT NULL,
    tasks       VARCHAR[] NOT NULL,
    actions     VARCHAR[] NOT NULL,
    entities    VARCHAR[] NOT NULL,
    topics      VARCHAR[] NOT NULL,
    sentiment   DOUBLE NOT NULL,
    enriched_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE episodes (
    episode_id VARCHAR PRIMARY KEY,            -- 'ep:' || uid of its first memory
    started_at TIMESTAMPTZ NOT NULL,
    ended_at   TIMESTAMPTZ NOT NULL,
    size       INTEGER NOT NULL,
    goal       VARCHAR,
    topics     VARCHAR[] NOT NULL
);

CREATE TABLE episode_members (
    uid        VARCHAR PRIMARY KEY,
    episode_id VARCHAR NOT NULL,
    position   INTEGER NOT NULL
);

-- Consolidation: Hebbian association weights between co-activated memories (a < b).
CREATE TABLE associations (
    a                   VARCHAR NOT NULL,
    b                   VARCHAR NOT NULL,
    episode_id          VARCHAR NOT NULL,
    coactivations       INTEGER NOT NULL,
    base_weight         DOUBLE NOT NULL,       -- after the Hebbian updates, before decay
    weight              DOUBLE NOT NULL,       -- after decay to the run's time
    last_coactivated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (a, b)
);

-- Long-term: embeddings and the k-nearest-neighbour semantic network.
CREATE TABLE embeddings (
    uid         VARCHAR PRIMARY KEY,
    revision    INTEGER NOT NULL,
    source      VARCHAR NOT NULL,              -- 'llm' or 'fallback' (replaced later)
    model       VARCHAR,
    vector      FLOAT[] NOT NULL,
    indexed     BOOLEAN NOT NULL,              -- false until its neighbours are computed
    embedded_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE semantic_edges (
    a          VARCHAR NOT NULL,               -- b is among a's nearest neighbours
    b          VARCHAR NOT NULL,
    similarity DOUBLE NOT NULL,
    rank       INTEGER NOT NULL,
    PRIMARY KEY (a, b)
);

-- Working memory: one snapshot per run, ranked by priority.
CREATE TABLE working_memory (
    run_id   BIGINT NOT NULL,
    as_of    TIMESTAMPTZ NOT NULL,
    rank     INTEGER NOT NULL,
    uid      VARCHAR NOT NULL,
    priority DOUBLE NOT NULL,
    PRIMARY KEY (run_id, rank)
);

CREATE TABLE dreams (
    dream_id     VARCHAR PRIMARY KEY,          -- a || '|' || b
    a            VARCHAR NOT NULL,
    b            VARCHAR NOT NULL,
    link         VARCHAR NOT NULL,
    kind         VARCHAR NOT NULL,
    plausibility DOUBLE NOT NULL,
    novelty      DOUBLE NOT NULL,
    kept         BOOLEAN NOT NULL,             -- plausibility at or above the threshold
    model        VARCHAR,
    dreamt_at    TIMESTAMPTZ NOT NULL
);

-- Small named values the stages keep between runs (homeostasis scale, ...).
CREATE TABLE pipeline_state (
    key        VARCHAR PRIMARY KEY,
    value      JSON NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
