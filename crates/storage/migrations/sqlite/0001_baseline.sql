-- The schema txbank created on start before it had versioned migrations. Every table is
-- created only when missing, so a database made by those versions upgrades in place.
--
-- account_info and de_duplication keep the seed's names; balances are whole cents and
-- times are Unix milliseconds on both engines. The opening balance is kept so that the
-- auditor knows how much money entered the system.
-- - transfer_out: each transfer this bank sent, and where it stands;
-- - transfer_in: each transfer this bank received, credited or refused;
-- - settlement_outbox: reports owed to senders, written with the credit or refusal and
--   deleted once sent;
-- - redrive: sent transfers whose message was sent again because no settlement came;
-- - set_aside: received messages that were never applied, one row per message.

CREATE TABLE IF NOT EXISTS account_info (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_name VARCHAR(100) NOT NULL,
    account_no VARCHAR(64) NOT NULL UNIQUE,
    account_password VARCHAR(255) NOT NULL DEFAULT '',
    account_balance_cents BIGINT NOT NULL
        CHECK (account_balance_cents BETWEEN 0 AND 9999999999),
    opening_balance_cents BIGINT NOT NULL DEFAULT 0,
    closed BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS de_duplication (
    tx_no VARCHAR(64) PRIMARY KEY,
    create_time BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS transfer_out (
    tx_no VARCHAR(64) PRIMARY KEY,
    idempotency_key VARCHAR(128) UNIQUE,
    from_account VARCHAR(64) NOT NULL,
    to_bank VARCHAR(32) NOT NULL,
    to_account VARCHAR(64) NOT NULL,
    amount_cents BIGINT NOT NULL,
    state VARCHAR(16) NOT NULL,
    reason VARCHAR(255),
    create_time BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS transfer_in (
    tx_no VARCHAR(64) PRIMARY KEY,
    from_bank VARCHAR(32) NOT NULL,
    from_account VARCHAR(64) NOT NULL,
    to_account VARCHAR(64) NOT NULL,
    amount_cents BIGINT NOT NULL,
    state VARCHAR(16) NOT NULL,
    reason VARCHAR(255),
    create_time BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS settlement_outbox (
    tx_no VARCHAR(64) PRIMARY KEY,
    to_bank VARCHAR(32) NOT NULL,
    outcome VARCHAR(16) NOT NULL,
    reason VARCHAR(255),
    create_time BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS set_aside (
    message_id VARCHAR(64) PRIMARY KEY,
    message_key VARCHAR(128) NOT NULL,
    reason VARCHAR(32) NOT NULL,
    detail VARCHAR(255) NOT NULL,
    deliveries BIGINT NOT NULL,
    first_seen BIGINT NOT NULL,
    last_seen BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS redrive (
    tx_no VARCHAR(64) PRIMARY KEY,
    attempts BIGINT NOT NULL,
    next_at BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS transfer_out_by_state_time ON transfer_out (state, create_time);

CREATE INDEX IF NOT EXISTS transfer_out_by_time ON transfer_out (create_time);
