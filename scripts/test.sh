#!/usr/bin/env bash
# Runs every test of txbank: formatting and clippy, unit, storage (SQLite, MariaDB and
# PostgreSQL) and system tests that start real RocketMQ name servers, brokers and bank
# processes. Makes sure MariaDB runs on 127.0.0.1:3306 (root, empty password) and
# PostgreSQL on 127.0.0.1:5432 (postgres, no password) first, installing and starting
# them when they are missing, and installs Chromium and ChromeDriver for the
# dashboard's browser test, iproute2 for the chaos runs' network namespaces (run as
# root) and schemathesis (PyPI) for the API contract test; fails if it cannot. Builds
# into ./target, as `cargo run --release` does, unless CARGO_TARGET_DIR says otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

mariadb_answers() {
  mariadb -uroot -h127.0.0.1 -P3306 -e 'SELECT 1' >/dev/null 2>&1
}

if ! mariadb_answers; then
  if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
    echo "installing MariaDB..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server mariadb-client >/dev/null
  fi
  echo "starting MariaDB..."
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  for _ in $(seq 1 60); do
    mariadb -uroot -e 'SELECT 1' >/dev/null 2>&1 && break
    sleep 1
  done
  # A fresh install lets root in only through the socket: allow TCP with no password.
  mariadb_answers || mariadb -uroot -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket; CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION; FLUSH PRIVILEGES;" || true
  mariadb_answers || { echo "MariaDB does not answer on 127.0.0.1:3306 as root with an empty password" >&2; exit 1; }
fi

postgres_answers() {
  psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -Atc 'SELECT 1' >/dev/null 2>&1
}

if ! postgres_answers; then
  if ! command -v psql >/dev/null 2>&1 || ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "installing PostgreSQL..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-client >/dev/null
  fi
  cluster=$(ls /etc/postgresql | sort -V | tail -1)
  # The tests connect over TCP as postgres without a password.
  hba=/etc/postgresql/$cluster/main/pg_hba.conf
  grep -q "txbank tests" "$hba" || sed -i '1i host all postgres 127.0.0.1/32 trust # txbank tests' "$hba"
  echo "starting PostgreSQL..."
  pg_ctlcluster --skip-systemctl-redirect "$cluster" main start 2>/dev/null ||
    pg_ctlcluster --skip-systemctl-redirect "$cluster" main reload || true
  for _ in $(seq 1 60); do
    postgres_answers && break
    sleep 1
  done
  postgres_answers || { echo "PostgreSQL does not answer on 127.0.0.1:5432 as postgres without a password" >&2; exit 1; }
fi

# The dashboard's screenshot shows the account holders' Chinese names as users see them.
if ! dpkg -s fonts-noto-cjk >/dev/null 2>&1; then
  echo "installing a CJK font..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-noto-cjk >/dev/null
fi

# The dashboard's end-to-end test drives Debian's headless Chromium through ChromeDriver.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "installing Chromium and ChromeDriver..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# The chaos runs put each bank instance in a network namespace of its own.
if ! command -v ip >/dev/null 2>&1; then
  echo "installing iproute2..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
fi

# The API contract test drives schemathesis (PyPI) against a running bank, from a virtual
# environment kept beside the build between runs.
FUZZ_VENV="${TXBANK_FUZZ_VENV:-/var/tmp/txbank-fuzz}"
SCHEMATHESIS_VERSION=4.32.5
if ! "$FUZZ_VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "installing schemathesis $SCHEMATHESIS_VERSION..."
  if ! python3 -m venv "$FUZZ_VENV" >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$FUZZ_VENV"
  fi
  "$FUZZ_VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi
export TXBANK_SCHEMATHESIS="$FUZZ_VENV/bin/schemathesis"

# Each run's tests create their own txbank_t_* databases; drop those of earlier runs.
for db in $(mariadb -uroot -h127.0.0.1 -N -e "SHOW DATABASES LIKE 'txbank\_t\_%'"); do
  mariadb -uroot -h127.0.0.1 -e "DROP DATABASE \`$db\`"
done

for db in $(psql -h 127.0.0.1 -U postgres -d postgres -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'txbank\_t\_%'"); do
  psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE \"$db\" WITH (FORCE)"
done

cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets -- -D warnings
# The release profile itself, not --release (which builds tests and the crates they
# test with the bench profile): the tests then reuse what `cargo build --release`
# compiled, all but the txbank crates that carry the lab's fault points (feature `lab`,
# which the product leaves out).
cargo test --profile release --workspace
