-- Automated recovery: every decision in an audit table, and each rule's state,
-- so attempt counters, cooldowns and the open incident survive a restart.

CREATE SEQUENCE recovery_audit_seq;

-- One row per decision. Repeats of the same skip (a cooldown seen at every
-- evaluation) update one row: `occurrences` and `last_at`.
CREATE TABLE recovery_audit (
    id           BIGINT PRIMARY KEY DEFAULT nextval('recovery_audit_seq'),
    decided_at   TIMESTAMPTZ NOT NULL,          -- when decided (first, for repeats)
    last_at      TIMESTAMPTZ NOT NULL,          -- the latest repeat
    occurrences  INTEGER NOT NULL DEFAULT 1,
    rule         VARCHAR NOT NULL,
    component    VARCHAR NOT NULL,
    action       VARCHAR NOT NULL,              -- an action, or the rule's actions joined by '+'
    target       VARCHAR,
    arguments    JSON,                          -- redacted
    outcome      VARCHAR NOT NULL,              -- done, failed, skipped
    reason       VARCHAR,                       -- skipped: cooldown, attempt_limit, guard,
                                                -- dry_run, unavailable, disabled
    summary      VARCHAR,                       -- what was done, or why not (redacted)
    detail       JSON,                          -- redacted
    why          VARCHAR,                       -- why the rule fired (or 'manual run')
    phase        VARCHAR NOT NULL,              -- act, escalate, resolve, manual
    incident_id  VARCHAR,
    duration_ms  DOUBLE
);

CREATE INDEX recovery_audit_rule_at ON recovery_audit (rule, decided_at);

-- Times are wall-clock (the monotonic clock restarts with the machine).
CREATE TABLE recovery_rule_state (
    rule                 VARCHAR PRIMARY KEY,
    attempts             JSON NOT NULL,        -- epoch seconds of attempts in the window
    cooldown_until       DOUBLE,               -- epoch seconds, or NULL
    incident_id          VARCHAR,
    incident_started_at  DOUBLE,               -- epoch seconds
    escalated            BOOLEAN NOT NULL DEFAULT false,
    acted                BOOLEAN NOT NULL DEFAULT false,
    updated_at           TIMESTAMPTZ NOT NULL
);
