#!/usr/bin/env bash
# Makes the databases crates/cli/tests/system/upgrade.rs upgrades: bank1's and bank2's, as
# txbank made them before it had versioned migrations (commit 51f924a), with transfers
# in every state, a closed account and an account with a password.
#
#   git worktree add /tmp/txbank-old 51f924a && (cd /tmp/txbank-old && cargo build --release)
#   scripts/make-upgrade-fixtures.sh /tmp/txbank-old/target/release/txbank
#
# It runs that binary's `up` on the default ports, so nothing else may hold them. The
# SQLite files are the banks' own; the MariaDB dumps hold the same rows in the tables
# the same binary creates on MySQL/MariaDB (127.0.0.1:3306, root, no password).
set -euo pipefail
old=${1:?usage: $0 OLD_TXBANK_BINARY}
out="$(cd "$(dirname "$0")/.." && pwd)/crates/cli/tests/fixtures/before-migrations"
work=$(mktemp -d)
trap 'pkill -9 -f "^$old " || true; rm -rf "$work"' EXIT

"$old" up --data-dir "$work/data" >"$work/up.log" 2>&1 &
for _ in $(seq 1 120); do
  curl -sf http://127.0.0.1:56082/readyz >/dev/null 2>&1 && curl -sf http://127.0.0.1:56081/readyz >/dev/null 2>&1 && break
  sleep 1
done
token="--token-file=$work/data/api-token"
bank1=http://127.0.0.1:56081
bank2=http://127.0.0.1:56082
transfer() { "$old" transfer "$token" "$@"; }

# An account whose holder logs in with a password, and a closed one.
TXBANK_ACCOUNT_PASSWORD=fixture-password-5 "$old" accounts "$token" --url $bank1 open --no 5 --name 钱七 --opening-balance 300
"$old" accounts "$token" --url $bank2 open --no 6 --name 孙八 --opening-balance 0
"$old" accounts "$token" --url $bank2 close --no 6

transfer --url $bank1 --from 1 --to 2 --amount 100 --idempotency-key fixture-credited   # credited
transfer --url $bank2 --from 4 --to 1 --amount 10.50                                     # credited, the other way
transfer --url $bank1 --from 1 --to 6 --amount 5                                         # returned: 6 is closed
transfer --url $bank1 --from 3 --to 2 --amount 999999 || true                            # rolled back: too little money
TXBANK_PASSWORD=fixture-password-5 transfer --url $bank1 --as 5 --from 5 --to 2 --amount 1 # by the holder
sleep 5

# In flight: bank2 stops before the message reaches it, and everything dies.
pkill -STOP -f "^$old bank --preset bank2"
transfer --url $bank1 --from 1 --to 4 --amount 7 --idempotency-key fixture-in-flight
sleep 2
pkill -9 -f "^$old "
sleep 1

mkdir -p "$out"
for bank in bank1 bank2; do
  sqlite3 "$work/data/$bank.db" 'PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;' >/dev/null
  cp "$work/data/$bank.db" "$out/$bank.db"
  # The same rows in the tables the old binary creates on MariaDB.
  db="txbank_fixture_$bank"
  mariadb -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS $db; CREATE DATABASE $db"
  TXBANK_DATABASE_URL="mysql://root@127.0.0.1:3306/$db" timeout 20 "$old" bank --preset "$bank" \
    --data-dir "$work/data" --listen 127.0.0.1:0 --namesrv-addr 127.0.0.1:1 >"$work/$bank-mysql.log" 2>&1 || true
  for table in account_info de_duplication transfer_out transfer_in settlement_outbox set_aside redrive; do
    mariadb -uroot -h127.0.0.1 "$db" -e "DELETE FROM $table"
    sqlite3 -cmd '.mode insert '"$table" "$out/$bank.db" "SELECT * FROM $table" | mariadb -uroot -h127.0.0.1 "$db"
  done
  mariadb-dump -uroot -h127.0.0.1 --skip-comments --skip-dump-date "$db" >"$out/$bank.mariadb.sql"
  mariadb -uroot -h127.0.0.1 -e "DROP DATABASE $db"
done
echo "fixtures written to $out"
