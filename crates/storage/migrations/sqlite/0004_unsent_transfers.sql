-- Debited transfers whose message no broker has stored yet (the broker was away when
-- they were paid): the sender's books are their outbox. claimed_until is the lease of
-- the instance sending one now (0: none), so that of several instances one sends it.
CREATE TABLE unsent_transfer (
    tx_no VARCHAR(64) PRIMARY KEY,
    claimed_until BIGINT NOT NULL,
    create_time BIGINT NOT NULL
);

CREATE INDEX unsent_transfer_by_time ON unsent_transfer (create_time);
