//! The RocketMQ name server and broker, run in this process from the `rocketmq-namesrv`
//! and `rocketmq-broker` crates (Apache RocketMQ's Rust implementation).
//!
//! Each runs on its own runtime owned the way those crates require, bound to the given
//! address, and stops on SIGINT/SIGTERM. Their store lives under the given folder,
//! which also serves as `ROCKETMQ_HOME`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rocketmq_broker::config::java_properties::JavaBrokerProperties;
use rocketmq_broker::config::raw::RawBrokerConfig;
use rocketmq_broker::config::validated::ValidatedBrokerConfig;
use rocketmq_namesrv::NamesrvConfig;
use rocketmq_observability::TelemetryRuntimeGuard;
use rocketmq_protocol::protocol::remoting_command_facade::initialize_remoting_defaults;
use rocketmq_runtime::{RuntimeConfig, RuntimeOwner, ServiceLifecycle, ShutdownReason};
use rocketmq_transport::api::{ServerConfig, TransportClientConfig};

/// How the broker is run: where it listens and stores, and how it checks back on
/// transactions nobody committed or rolled back.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// The address clients connect to; the port below it by two is also taken (the
    /// broker's "fast" listener) and the one above it by one (HA).
    pub listen: SocketAddr,
    /// The broker's name, unique within its cluster (`brokerName`).
    pub name: String,
    /// The cluster it belongs to (`brokerClusterName`).
    pub cluster: String,
    /// The name-server list the broker registers with.
    pub namesrv_addr: String,
    /// The store's root folder.
    pub store_dir: PathBuf,
    /// How old an undecided half message must be before the broker checks back.
    pub transaction_timeout: Duration,
    /// How often the broker looks for undecided half messages.
    pub transaction_check_interval: Duration,
    /// How many times it checks back before giving a half message up.
    pub transaction_check_max: u32,
    /// `SYNC_FLUSH` (every message on disk before the send returns) or `ASYNC_FLUSH`.
    pub flush_disk_type: String,
}

/// Runs a name server on `listen` until SIGINT/SIGTERM.
pub fn run_namesrv(listen: SocketAddr, home: &Path) -> Result<()> {
    prepare_home(home)?;
    let owner = RuntimeOwner::plan(RuntimeConfig::namesrv_default())?
        .build()
        .context("namesrv runtime")?;
    let context = owner.root_context().component("txbank-namesrv");
    let lifecycle = ServiceLifecycle::from_env("rocketmq-namesrv").context("namesrv lifecycle")?;
    let home_text = home.to_string_lossy().to_string();
    let result = owner.block_on(async {
        initialize_remoting_defaults(rocketmq_model::version::CURRENT_VERSION as i32).context("remoting defaults")?;
        let namesrv_config = NamesrvConfig {
            rocketmq_home: home_text.clone(),
            kv_config_path: format!("{home_text}/namesrv/kvConfig.json"),
            config_store_path: format!("{home_text}/namesrv/namesrv.properties"),
            ..NamesrvConfig::default()
        };
        let server_config = ServerConfig {
            bind_address: listen.ip().to_string(),
            listen_port: u32::from(listen.port()),
            ..ServerConfig::default()
        };
        lifecycle.start(&context).await.context("namesrv lifecycle start")?;
        tracing::info!(%listen, "name server starting");
        rocketmq_namesrv::bootstrap::Builder::new(context.clone(), rocketmq_observability::TelemetryHandle::noop())
            .set_name_server_config(namesrv_config)
            .set_server_config(server_config)
            .set_tokio_client_config(TransportClientConfig::default())
            .build()
            .boot_with_lifecycle(lifecycle.clone())
            .await
            .map_err(|e| anyhow::anyhow!("name server failed: {e}"))?;
        anyhow::Ok(())
    });
    finish(owner, &lifecycle, result)
}

/// True when the broker's store at `store_dir` holds no configuration yet: a first
/// start, or a store lost with its disk.
pub fn is_new_store(store_dir: &Path) -> bool {
    !store_dir.join("config").exists()
}

/// Runs a broker until SIGINT/SIGTERM.
pub fn run_broker(settings: &BrokerSettings) -> Result<()> {
    if is_new_store(&settings.store_dir) {
        tracing::info!(store = %settings.store_dir.display(), "starting with a new, empty store");
    }
    prepare_home(&settings.store_dir)?;
    let properties = broker_properties(settings);
    let raw = JavaBrokerProperties::parse(&properties)
        .with_context(|| format!("broker configuration refused:\n{properties}"))?
        .into_config();
    // The properties format has no keys for these: set them on the config itself.
    let mut broker = raw.broker().clone();
    broker.broker_server_config.bind_address = settings.listen.ip().to_string();
    broker.broker_server_config.listen_port = u32::from(settings.listen.port());
    broker.transaction_timeout = settings.transaction_timeout.as_millis() as u64;
    broker.transaction_check_interval = settings.transaction_check_interval.as_millis() as u64;
    broker.transaction_check_max = settings.transaction_check_max;
    // A restarted name server learns of the broker within 10 s instead of 30 s, so banks
    // starting meanwhile find it sooner.
    broker.register_name_server_period = 10_000;
    // RocketMQ's HA listener (replicas read the commit log from it) binds every
    // interface by default; it binds the broker's own address instead, so a broker on
    // loopback is reachable from this machine only.
    let mut store = raw.store().clone();
    store.ha_listen_address = settings.listen.ip();
    let raw = RawBrokerConfig::from_parts(broker, store);
    let validated = ValidatedBrokerConfig::try_from(raw).context("broker configuration invalid")?;
    let owner = RuntimeOwner::plan(RuntimeConfig::broker_default())?
        .build()
        .context("broker runtime")?;
    let context = owner.root_context().component("txbank-broker");
    let lifecycle = ServiceLifecycle::from_env("rocketmq-broker").context("broker lifecycle")?;
    let result = owner.block_on(async {
        initialize_remoting_defaults(rocketmq_model::common::mq_version::CURRENT_VERSION as i32)
            .context("remoting defaults")?;
        lifecycle.start(&context).await.context("broker lifecycle start")?;
        tracing::info!(listen = %settings.listen, store = %settings.store_dir.display(), "broker starting");
        rocketmq_broker::Builder::new(context.clone(), TelemetryRuntimeGuard::noop())
            .with_validated_config(validated)
            .build()
            .boot_with_lifecycle(lifecycle.clone())
            .await
            .map_err(|e| anyhow::anyhow!("broker failed: {e}{}", full_disk_hint(&settings.store_dir)))?;
        anyhow::Ok(())
    });
    finish(owner, &lifecycle, result)
}

/// The share of its disk in use (percent) above which RocketMQ's store takes no message
/// (`diskMaxUsedSpaceRatio`, 75 by default); its broker then fails to start without
/// saying why.
const STORE_DISK_MAX_USED_PERCENT: u64 = 75;

/// Says why the broker probably failed when the disk holding `store` is fuller than
/// RocketMQ's store accepts; empty otherwise.
fn full_disk_hint(store: &Path) -> String {
    match disk_used_percent(store) {
        Some(used) if used >= STORE_DISK_MAX_USED_PERCENT => format!(
            " (the disk holding {} is {used}% full, and RocketMQ's store takes no message above \
             {STORE_DISK_MAX_USED_PERCENT}%: free space, or put the store on another disk)",
            store.display()
        ),
        _ => String::new(),
    }
}

/// How full the file system holding `path` is, in percent, as `df` counts it.
fn disk_used_percent(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain data, for which all zeroes is a valid value.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `stats` a statvfs to fill; both
    // outlive the call.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stats) } != 0 {
        return None;
    }
    let used = (stats.f_blocks - stats.f_bfree) as u64;
    let usable = used + stats.f_bavail as u64;
    (usable > 0).then(|| (used * 100).div_ceil(usable))
}

/// The broker's configuration in the Java `broker.conf` format both implementations read.
fn broker_properties(settings: &BrokerSettings) -> String {
    let ip = settings.listen.ip();
    let port = settings.listen.port();
    let store = settings.store_dir.to_string_lossy();
    [
        ("brokerClusterName", settings.cluster.clone()),
        ("brokerName", settings.name.clone()),
        ("brokerId", "0".to_string()),
        ("brokerIP1", ip.to_string()),
        ("listenPort", port.to_string()),
        ("haListenPort", (port + 1).to_string()),
        ("namesrvAddr", settings.namesrv_addr.clone()),
        ("storePathRootDir", store.to_string()),
        ("autoCreateTopicEnable", "true".to_string()),
        ("flushDiskType", settings.flush_disk_type.clone()),
        // The commit log gathers appends into micro-batches, waiting up to this long for
        // more after the first. 1.0's default of 50 µs sleeps on Tokio's millisecond
        // timer, so every batch waited about 1 ms: transactional sends stalled near
        // 1,400/s whatever the concurrency. Without the wait, a batch takes what is
        // queued already: 7,500/s at 16 senders (docs/PERFORMANCE.md).
        ("commitLogMicroBatchMaxWaitMicros", "0".to_string()),
    ]
    .iter()
    .map(|(key, value)| format!("{key}={value}\n"))
    .collect()
}

/// Creates the folder and points `ROCKETMQ_HOME` at it when it is not set.
fn prepare_home(home: &Path) -> Result<()> {
    std::fs::create_dir_all(home).with_context(|| format!("cannot create {}", home.display()))?;
    if std::env::var_os("ROCKETMQ_HOME").is_none() {
        // Called before any runtime thread exists.
        std::env::set_var("ROCKETMQ_HOME", home);
    }
    Ok(())
}

/// Shuts the runtime down within the lifecycle's deadline and reports the first failure.
fn finish(owner: RuntimeOwner, lifecycle: &ServiceLifecycle, result: Result<()>) -> Result<()> {
    if result.is_err() {
        lifecycle.mark_failed();
    }
    let request = lifecycle
        .shutdown_request()
        .unwrap_or_else(|| lifecycle.request_shutdown(ShutdownReason::Internal));
    let shutdown = owner.shutdown_runtime_blocking_until(request.deadline);
    result?;
    if let Err(error) = shutdown {
        bail!("runtime shutdown failed: {error}");
    }
    Ok(())
}
