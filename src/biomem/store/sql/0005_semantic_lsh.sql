-- Long-term: the approximate k-nearest-neighbour network for large stores.
-- Random hyperplanes, drawn once per store and vector length, so a vector's
-- codes never change while its planes stay; and each vector's codes, kept so
-- that a rebuild only projects the vectors that changed.

CREATE TABLE lsh_planes (
    dim    INTEGER NOT NULL,                  -- the vectors' length
    band   INTEGER NOT NULL,                  -- 0 .. bands - 1
    bit    INTEGER NOT NULL,                  -- 0 .. bits - 1; bit 0 is the lowest
    normal FLOAT[] NOT NULL,                  -- +1 / -1 in each dimension
    PRIMARY KEY (dim, band, bit)
);

CREATE TABLE embedding_codes (
    uid   VARCHAR PRIMARY KEY,
    codes INTEGER[] NOT NULL                  -- one per band: the signs of its planes as bits
);
