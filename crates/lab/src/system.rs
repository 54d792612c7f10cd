//! The system's processes, as `bench` and `chaos` run them: this binary again as
//! each part (name server, broker, bank instances), each in its own process group with
//! its output in `logs/PART.log`, restartable on the same address and data.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use txbank::audit::read_and_audit;
use txbank::config::{create_secret_file, defaults, API_TOKEN_FILE, KEYS_DIR};
use txbank::databases::named_or_up;
use txbank::supervisor::{log_file, part_command_via, Ready, Supervisor};
use txbank_domain::audit::AuditReport;
use txbank_domain::BankId;
use txbank_storage::Store;

use crate::netns::{Link, Namespace};

/// The folder of a run with its `logs` folder: `data_dir`, or a new one named after
/// `what` under the temp folder.
pub(crate) fn run_folder(data_dir: Option<&Path>, what: &str) -> Result<PathBuf> {
    let dir = match data_dir {
        Some(dir) => dir.to_path_buf(),
        None => std::env::temp_dir().join(format!("txbank-{what}-{}", std::process::id())),
    };
    std::fs::create_dir_all(dir.join("logs")).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// How many of each part a run starts: name servers, brokers of one RocketMQ cluster,
/// and instances of each bank sharing the bank's database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Topology {
    /// Name servers.
    pub namesrvs: usize,
    /// Master brokers, each with its own name and store.
    pub brokers: usize,
    /// Instances of each bank.
    pub instances: usize,
}

impl Topology {
    /// Most parts of one kind a run starts: the brokers' names (`broker-a`...) and the
    /// instances' (`bank1a`...) take a letter each, and the machine's cores are few.
    pub(crate) const MOST: usize = 8;

    /// A topology of `namesrvs`, `brokers` and `instances`, each 1 to [`Topology::MOST`].
    pub(crate) fn new(namesrvs: usize, brokers: usize, instances: usize) -> Result<Topology> {
        for (count, flag) in [
            (namesrvs, "--namesrvs"),
            (brokers, "--brokers"),
            (instances, "--instances"),
        ] {
            if !(1..=Topology::MOST).contains(&count) {
                bail!("{flag} must be 1 to {}, not {count}", Topology::MOST);
            }
        }
        Ok(Topology {
            namesrvs,
            brokers,
            instances,
        })
    }

    /// The name servers' names: `namesrv-1`, `namesrv-2`...
    pub(crate) fn namesrv_names(&self) -> Vec<String> {
        (1..=self.namesrvs).map(|n| format!("namesrv-{n}")).collect()
    }

    /// The brokers' names, as RocketMQ names them: `broker-a`, `broker-b`...
    pub(crate) fn broker_names(&self) -> Vec<String> {
        (0..self.brokers).map(|n| format!("broker-{}", letter(n))).collect()
    }

    /// The names of `bank`'s instances: `bank1a`, `bank1b`...
    pub(crate) fn instance_names(&self, bank: &str) -> Vec<String> {
        (0..self.instances).map(|n| format!("{bank}{}", letter(n))).collect()
    }
}

/// `a` for 0, `b` for 1...
fn letter(n: usize) -> char {
    char::from(b'a' + n as u8)
}

/// What a process of the system is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Namesrv,
    Broker,
    /// An instance of this bank.
    Bank(&'static str),
}

/// One process of the system: its name (its log is `logs/NAME.log`), what it is, and
/// where it listens.
#[derive(Debug, Clone)]
struct Part {
    name: String,
    role: Role,
    listen: SocketAddr,
}

/// The running processes, each restartable on the same address and data.
pub(crate) struct System {
    dir: PathBuf,
    token: String,
    /// Each bank's database as `NAME=URL`, the receiving bank first.
    databases: Vec<String>,
    topology: Topology,
    /// Every part, in start order: name servers, brokers, then bank instances.
    parts: Vec<Part>,
    check_back: CheckBack,
    running: Supervisor,
    /// Each bank instance's network namespace, when the run isolates them.
    namespaces: BTreeMap<String, Namespace>,
}

/// How soon the broker checks back on a half message nobody committed or rolled back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckBack {
    timeout_ms: u64,
    interval_ms: u64,
}

impl CheckBack {
    /// Within a second or two, so that a chaos run converges quickly after each kill.
    pub(crate) const FAST: CheckBack = CheckBack {
        timeout_ms: 1000,
        interval_ms: 1000,
    };
    /// As `txbank broker` and `up` do by default.
    pub(crate) const DEFAULT: CheckBack = CheckBack {
        timeout_ms: defaults::TRANSACTION_TIMEOUT_MS,
        interval_ms: defaults::TRANSACTION_CHECK_INTERVAL_MS,
    };
}

impl System {
    /// Starts the name servers, the brokers (one cluster, checking back as
    /// `check_back` says) and the instances of each bank that `topology` asks for, in
    /// `dir`, each bank on its database given as `NAME=URL` (bank2 first); each bank
    /// instance in a network namespace of its own when `isolated` (see
    /// [`crate::netns`]).
    pub(crate) async fn start(
        dir: &Path,
        topology: Topology,
        databases: Vec<String>,
        check_back: CheckBack,
        isolated: bool,
    ) -> Result<System> {
        txbank::keys::ensure_bank_keys(&dir.join(KEYS_DIR), &["bank1", "bank2"])?;
        create_secret_file(&dir.join(API_TOKEN_FILE))?;
        let token = std::fs::read_to_string(dir.join(API_TOKEN_FILE))?.trim().to_string();
        let mut parts = Vec::new();
        for name in topology.namesrv_names() {
            let listen = free_address(Role::Namesrv, &parts)?;
            parts.push(Part {
                name,
                role: Role::Namesrv,
                listen,
            });
        }
        for name in topology.broker_names() {
            let listen = free_address(Role::Broker, &parts)?;
            parts.push(Part {
                name,
                role: Role::Broker,
                listen,
            });
        }
        for bank in ["bank1", "bank2"] {
            for name in topology.instance_names(bank) {
                let listen = free_address(Role::Bank(bank), &parts)?;
                parts.push(Part {
                    name,
                    role: Role::Bank(bank),
                    listen,
                });
            }
        }
        let mut system = System {
            dir: dir.to_path_buf(),
            token,
            databases,
            topology,
            parts,
            check_back,
            running: Supervisor::new(START_WITHIN),
            namespaces: BTreeMap::new(),
        };
        if isolated {
            system.isolate()?;
        }
        let names: Vec<String> = system.parts.iter().map(|part| part.name.clone()).collect();
        for name in names {
            system.start_first_time(&name).await?;
        }
        Ok(system)
    }

    /// Starts `part` for the first time. Runs beside each other pick their free ports
    /// from the same range, and another run may bind one between [`free_address`] and
    /// this part's bind: a name server or broker that ends before it listens gets another
    /// port, up to [`FIRST_START_TRIES`] in all (each starts before anything that
    /// names its address; bank instances keep theirs, which their namespaces' proxies
    /// name).
    async fn start_first_time(&mut self, part: &str) -> Result<()> {
        let role = self
            .parts
            .iter()
            .find(|candidate| candidate.name == part)
            .map(|found| found.role)
            .with_context(|| format!("no part {part}"))?;
        for _ in 1..FIRST_START_TRIES {
            match (self.restart(part).await, role) {
                (Err(error), Role::Namesrv | Role::Broker) => {
                    let listen = free_address(role, &self.parts)?;
                    eprintln!("{part} did not start ({error:#}); trying {listen}");
                    for moved in self.parts.iter_mut().filter(|candidate| candidate.name == part) {
                        moved.listen = listen;
                    }
                }
                (started, _) => return started,
            }
        }
        self.restart(part).await
    }

    /// What the system runs.
    pub(crate) fn topology(&self) -> Topology {
        self.topology
    }

    /// The name-server list, `;`-separated, as every part is given it.
    pub(crate) fn namesrv_addr(&self) -> String {
        let addresses: Vec<String> = self.listening(Role::Namesrv).map(|addr| addr.to_string()).collect();
        addresses.join(";")
    }

    /// Where every part of `role` listens.
    fn listening(&self, role: Role) -> impl Iterator<Item = SocketAddr> + '_ {
        self.parts
            .iter()
            .filter(move |part| part.role == role)
            .map(|part| part.listen)
    }

    /// The operators' API token.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// The URLs of `bank`'s instances (`bank1`, `bank2`), in name order.
    pub(crate) fn instance_urls(&self, bank: &str) -> Vec<String> {
        self.parts
            .iter()
            .filter(|part| matches!(part.role, Role::Bank(of) if of == bank))
            .map(|part| format!("http://{}", part.listen))
            .collect()
    }

    /// The process id of each running part.
    pub(crate) fn pids(&self) -> Vec<(String, u32)> {
        self.running.pids()
    }

    /// Puts each bank instance in a network namespace of its own, which reaches the
    /// name servers, the brokers and a database server through proxies.
    fn isolate(&mut self) -> Result<()> {
        let database_ports: std::collections::BTreeSet<u16> =
            self.databases.iter().filter_map(|entry| server_port(entry)).collect();
        let mut broker_ports: Vec<u16> = self.listening(Role::Namesrv).map(|addr| addr.port()).collect();
        for broker in self.listening(Role::Broker) {
            broker_ports.extend([broker.port(), broker.port() - 2]);
        }
        let instances: Vec<(String, SocketAddr)> = self
            .parts
            .iter()
            .filter(|part| matches!(part.role, Role::Bank(_)))
            .map(|part| (part.name.clone(), part.listen))
            .collect();
        for (instance, listen) in instances {
            let mut namespace = Namespace::create(&format!("txbank-{}-{instance}", std::process::id()))?;
            for port in &broker_ports {
                namespace.forward_out(*port, Link::Broker)?;
            }
            for port in &database_ports {
                namespace.forward_out(*port, Link::Database)?;
            }
            namespace.forward_in(listen.port())?;
            self.namespaces.insert(instance, namespace);
        }
        Ok(())
    }

    /// The network namespace of bank instance `instance`, when the run isolates them.
    pub(crate) fn namespace(&self, instance: &str) -> Option<&Namespace> {
        self.namespaces.get(instance)
    }

    /// The network namespaces of every instance of `bank` (`bank1`, `bank2`).
    pub(crate) fn namespaces_of(&self, bank: &str) -> Vec<&Namespace> {
        self.namespaces
            .iter()
            .filter(|(instance, _)| instance.starts_with(bank))
            .map(|(_, namespace)| namespace)
            .collect()
    }

    /// The store folder of broker `broker`.
    fn broker_store(&self, broker: &str) -> PathBuf {
        self.dir.join("rocketmq").join(broker).join("store")
    }

    /// Kills `broker`, deletes its store folder, and starts it again empty after
    /// `down_for`.
    pub(crate) async fn lose_broker_store(&mut self, broker: &str, down_for: Duration) -> Result<()> {
        self.kill(broker);
        let store = self.broker_store(broker);
        std::fs::remove_dir_all(&store).with_context(|| format!("cannot delete {}", store.display()))?;
        tokio::time::sleep(down_for).await;
        self.restart(broker).await
    }

    /// Sends `signal` to `part`'s process, if it runs.
    pub(crate) fn signal(&mut self, part: &str, signal: libc::c_int) {
        if let Some(running) = self.running.part(part) {
            running.signal(signal);
        }
    }

    /// SIGKILL, as a crash, and wait until the process is gone.
    pub(crate) fn kill(&mut self, part: &str) {
        self.running.kill(part);
    }

    /// Starts `part` and waits until it listens.
    pub(crate) async fn restart(&mut self, part: &str) -> Result<()> {
        let Part { name, role, listen } = self
            .parts
            .iter()
            .find(|candidate| candidate.name == part)
            .cloned()
            .with_context(|| format!("no part {part}"))?;
        let logs = self.dir.join("logs");
        let namesrv_addr = self.namesrv_addr();
        let wrapper = self
            .namespaces
            .get(&name)
            .map(Namespace::exec_prefix)
            .unwrap_or_default();
        let mut command = part_command_via(&logs, &name, &wrapper)?;
        match role {
            Role::Namesrv => {
                command
                    .args(["namesrv", "--listen", &listen.to_string(), "--home"])
                    .arg(self.dir.join("rocketmq").join(&name));
            }
            Role::Broker => {
                command
                    .args(["broker", "--name", &name, "--listen", &listen.to_string()])
                    .args(["--namesrv-addr", &namesrv_addr])
                    .args([
                        "--transaction-timeout-ms",
                        &self.check_back.timeout_ms.to_string(),
                        "--transaction-check-interval-ms",
                        &self.check_back.interval_ms.to_string(),
                    ])
                    .args(["--transaction-check-max", "600", "--store"])
                    .arg(self.broker_store(&name));
            }
            Role::Bank(bank) => {
                command
                    .args(["bank", "--preset", bank, "--listen", &listen.to_string()])
                    .args(["--namesrv-addr", &namesrv_addr, "--data-dir"])
                    .arg(&self.dir)
                    // In the environment, so that no password shows in the process list.
                    .env("TXBANK_DATABASE_URL", self.database(bank)?)
                    // Soon after the faults, so that the run converges quickly.
                    .env("TXBANK_REDRIVE_AFTER_SECS", REDRIVE_AFTER_SECS.to_string())
                    // A queue for each instance on each broker, so that every instance
                    // consumes.
                    .env(
                        "TXBANK_TOPIC_QUEUES",
                        self.topology
                            .instances
                            .max(txbank_messaging::DEFAULT_TOPIC_QUEUES as usize)
                            .to_string(),
                    );
            }
        }
        // A bank listens once its topics are ready, which needs a broker registered with
        // the name server: after a name-server restart, up to the broker's next
        // registration.
        let ready = match role {
            Role::Bank(_) => Ready::Serves(listen),
            Role::Namesrv | Role::Broker => Ready::Accepts(listen),
        };
        self.running
            .restart(&name, command, log_file(&logs, &name), ready)
            .await
    }

    /// The database URL of `bank` (`bank1`, `bank2`).
    pub(crate) fn database(&self, bank: &str) -> Result<&str> {
        self.databases
            .iter()
            .find_map(|entry| entry.strip_prefix(bank)?.strip_prefix('='))
            .with_context(|| format!("no database for {bank}"))
    }

    /// The database of `bank` (`bank1`, `bank2`).
    pub(crate) async fn store(&self, bank: &str) -> Result<Store> {
        Ok(Store::connect(BankId::parse(bank)?, self.database(bank)?, 1).await?)
    }

    /// The auditor over both banks' databases.
    pub(crate) async fn audit(&self) -> Result<AuditReport> {
        read_and_audit(&named_or_up(&self.databases, Path::new(""))?).await
    }

    /// Kills every part at once.
    pub(crate) fn kill_all(&mut self) {
        self.running.kill_all();
    }
}

/// How long a part may take to listen: a bank waits for a broker registered with the
/// name server, which after a name-server restart is up to the broker's next
/// registration.
const START_WITHIN: Duration = Duration::from_secs(120);

/// Seconds a chaos run's banks wait for a settlement before re-driving a transfer.
const REDRIVE_AFTER_SECS: u64 = 5;

/// The port of the database server that `NAME=URL` names, if it is a server's.
fn server_port(entry: &str) -> Option<u16> {
    let url = entry.split_once('=')?.1;
    let (authority, default_port) = [
        ("mysql://", 3306),
        ("mariadb://", 3306),
        ("postgres://", 5432),
        ("postgresql://", 5432),
    ]
    .iter()
    .find_map(|(scheme, port)| Some((url.strip_prefix(scheme)?, *port)))?;
    let host = authority.split(['/', '?']).next()?;
    let host = host.rsplit_once('@').map_or(host, |(_, host)| host);
    Some(
        host.rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .unwrap_or(default_port),
    )
}

/// The URL of the SQLite file `NAME.db` in `dir`, created when missing.
pub(crate) fn sqlite_url(dir: &Path, name: &str) -> String {
    format!("sqlite://{}?mode=rwc", dir.join(format!("{name}.db")).display())
}

/// Where the processes started here listen: below Linux's ephemeral range (32768 and
/// up), from which the kernel picks the local port of every outgoing connection: a port
/// found free in that range can be taken by a connection opened before its server binds
/// it.
const LISTEN_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// How often a name server or broker is started on a new port before a run gives up.
const FIRST_START_TRIES: usize = 3;

/// The ports a part of `role` listening on `port` binds: a broker also two below and one
/// above.
fn ports_of(role: Role, port: u16) -> std::ops::RangeInclusive<u16> {
    match role {
        Role::Broker => port - 2..=port + 1,
        Role::Namesrv | Role::Bank(_) => port..=port,
    }
}

/// A free loopback address in [`LISTEN_PORTS`] for a part of `role`: every port it binds
/// is free now and none is one that a part of `picked` (not started yet, or started)
/// will bind.
fn free_address(role: Role, picked: &[Part]) -> Result<SocketAddr> {
    let mut random = [0u8; 2];
    for _ in 0..1_000 {
        getrandom::getrandom(&mut random).context("no randomness from the operating system")?;
        let port = LISTEN_PORTS.start + 2 + u16::from_le_bytes(random) % (LISTEN_PORTS.len() as u16 - 3);
        let taken = |p: u16| {
            picked
                .iter()
                .any(|part| ports_of(part.role, part.listen.port()).contains(&p))
        };
        if ports_of(role, port).all(|p| !taken(p) && TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
        }
    }
    bail!("no free loopback port in {LISTEN_PORTS:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_server_port_is_read_from_its_url() {
        assert_eq!(server_port("bank1=mysql://root:pw@127.0.0.1:3307/db"), Some(3307));
        assert_eq!(server_port("bank1=mysql://root@localhost/db"), Some(3306));
        assert_eq!(server_port("bank1=postgres://postgres@127.0.0.1/db"), Some(5432));
        assert_eq!(server_port("bank1=sqlite://x.db?mode=rwc"), None);
    }
}
