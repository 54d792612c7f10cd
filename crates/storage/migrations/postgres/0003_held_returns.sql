-- Returns whose money the source account could not take back (closed, or at its
-- maximum balance): held here, on the bank's books, until the account can take it.
CREATE TABLE held_return (
    tx_no VARCHAR(64) COLLATE "C" PRIMARY KEY,
    account_no VARCHAR(64) NOT NULL,
    amount_cents BIGINT NOT NULL,
    reason VARCHAR(255) NOT NULL,
    create_time BIGINT NOT NULL
);

-- The relay reads each destination's oldest reports.
CREATE INDEX settlement_outbox_by_bank_time ON settlement_outbox (to_bank, create_time);
