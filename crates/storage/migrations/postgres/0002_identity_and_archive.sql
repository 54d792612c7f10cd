-- Which bank a database belongs to: one row, written when a bank first opens it, so
-- that no command works on another bank's database by mistake.
CREATE TABLE bank_identity (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    bank VARCHAR(32) NOT NULL,
    claimed_at BIGINT NOT NULL
);

-- Settled transfers that `txbank archive` moved out of the hot tables, row for row.
CREATE TABLE transfer_out_archive (
    tx_no VARCHAR(64) COLLATE "C" PRIMARY KEY,
    idempotency_key VARCHAR(128),
    from_account VARCHAR(64) NOT NULL,
    to_bank VARCHAR(32) NOT NULL,
    to_account VARCHAR(64) NOT NULL,
    amount_cents BIGINT NOT NULL,
    state VARCHAR(16) NOT NULL,
    reason VARCHAR(255),
    create_time BIGINT NOT NULL
);
CREATE INDEX transfer_out_archive_by_key ON transfer_out_archive (idempotency_key);

CREATE TABLE transfer_in_archive (
    tx_no VARCHAR(64) COLLATE "C" PRIMARY KEY,
    from_bank VARCHAR(32) NOT NULL,
    from_account VARCHAR(64) NOT NULL,
    to_account VARCHAR(64) NOT NULL,
    amount_cents BIGINT NOT NULL,
    state VARCHAR(16) NOT NULL,
    reason VARCHAR(255),
    create_time BIGINT NOT NULL
);

-- What the archive holds, by direction and state, so that the auditor carries it
-- without reading it.
CREATE TABLE archive_totals (
    direction VARCHAR(8) NOT NULL,
    state VARCHAR(16) NOT NULL,
    transfers BIGINT NOT NULL,
    cents BIGINT NOT NULL,
    PRIMARY KEY (direction, state)
);
INSERT INTO archive_totals (direction, state, transfers, cents) VALUES
    ('out', 'credited', 0, 0), ('out', 'returned', 0, 0), ('out', 'rolled_back', 0, 0),
    ('in', 'credited', 0, 0), ('in', 'refused', 0, 0);

-- Settled transfers recorded before `before_ms` are archived (0: none). A message for a
-- transfer older than this is checked against the archive, never credited twice.
CREATE TABLE archive_horizon (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    before_ms BIGINT NOT NULL
);
INSERT INTO archive_horizon (id, before_ms) VALUES (1, 0);

-- Received transfers are archived oldest first.
CREATE INDEX transfer_in_by_time ON transfer_in (create_time);
