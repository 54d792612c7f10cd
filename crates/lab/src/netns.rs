//! Network faults for `txbank chaos`: a bank instance runs in a Linux network namespace
//! of its own (made with iproute2's `ip netns`), where the name server, the broker and
//! the database answer on their usual loopback ports only through proxies that this
//! process runs, so that one instance's links can be cut or slowed while the rest of
//! the system runs on. Its HTTP API is brought out to the same port on the host's
//! loopback. Needs root.

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Which of an instance's links a fault acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    /// To the name server and the broker.
    Broker,
    /// To the database server.
    Database,
}

/// One link's fault state, shared by its proxies and their connections.
#[derive(Debug)]
struct LinkState {
    /// True while cut: connections close and new ones are closed at once.
    cut: watch::Sender<bool>,
    /// Milliseconds each chunk of traffic waits before it is passed on.
    delay_ms: AtomicU64,
}

impl Default for LinkState {
    fn default() -> LinkState {
        LinkState {
            cut: watch::channel(false).0,
            delay_ms: AtomicU64::new(0),
        }
    }
}

/// A network namespace with its proxies; deleted when dropped.
pub(crate) struct Namespace {
    name: String,
    broker: Arc<LinkState>,
    database: Arc<LinkState>,
    proxies: Vec<JoinHandle<()>>,
}

impl Namespace {
    /// Creates the namespace `name` (replacing a leftover one of that name) with its
    /// loopback up.
    pub(crate) fn create(name: &str) -> Result<Namespace> {
        let _ = ip(&["netns", "delete", name]);
        ip(&["netns", "add", name]).context("network faults need root and iproute2's `ip netns`")?;
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(Namespace {
            name: name.to_string(),
            broker: Arc::default(),
            database: Arc::default(),
            proxies: Vec::new(),
        })
    }

    /// The program and arguments that run a command inside the namespace.
    pub(crate) fn exec_prefix(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.name].map(String::from).to_vec()
    }

    /// Makes `port` on the namespace's loopback lead to `port` on the host's, over `link`.
    pub(crate) fn forward_out(&mut self, port: u16, link: Link) -> Result<()> {
        let listener = self.inside(move || StdListener::bind(("127.0.0.1", port)))?;
        let state = Arc::clone(match link {
            Link::Broker => &self.broker,
            Link::Database => &self.database,
        });
        let target = SocketAddr::from(([127, 0, 0, 1], port));
        self.proxies.push(spawn_proxy(listener, state, move || async move {
            TcpStream::connect(target).await
        })?);
        Ok(())
    }

    /// Makes `port` on the host's loopback lead to `port` on the namespace's (a bank's
    /// HTTP API); never cut.
    pub(crate) fn forward_in(&mut self, port: u16) -> Result<()> {
        let listener = StdListener::bind(("127.0.0.1", port))?;
        let file = self.file();
        self.proxies.push(spawn_proxy(listener, Arc::default(), move || {
            let file = file.clone();
            async move {
                let stream = tokio::task::spawn_blocking(move || {
                    in_namespace(&file, move || StdStream::connect(("127.0.0.1", port)))
                })
                .await
                .map_err(io::Error::other)??;
                stream.set_nonblocking(true)?;
                TcpStream::from_std(stream)
            }
        })?);
        Ok(())
    }

    /// Cuts `link` (every connection closed, new ones closed at once) or mends it.
    pub(crate) fn cut(&self, link: Link, cut: bool) {
        self.link(link).cut.send_replace(cut);
    }

    /// Delays every chunk of traffic on `link` by `delay` (zero: none).
    pub(crate) fn delay(&self, link: Link, delay: Duration) {
        self.link(link)
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    fn link(&self, link: Link) -> &LinkState {
        match link {
            Link::Broker => &self.broker,
            Link::Database => &self.database,
        }
    }

    fn file(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `work` on a thread that entered the namespace: sockets it makes belong there.
    fn inside<T: Send + 'static>(&self, work: impl FnOnce() -> io::Result<T> + Send + 'static) -> Result<T> {
        let file = self.file();
        in_namespace(&file, work).with_context(|| format!("in network namespace {}", self.name))
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        for proxy in &self.proxies {
            proxy.abort();
        }
        let _ = ip(&["netns", "delete", &self.name]);
    }
}

/// Runs `work` on a new thread that first joins the network namespace at `file`.
fn in_namespace<T: Send + 'static>(
    file: &std::path::Path,
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let namespace = std::fs::File::open(file)?;
    std::thread::spawn(move || {
        // SAFETY: setns only changes this new thread's network namespace; the file
        // descriptor is open for the call.
        if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        work()
    })
    .join()
    .map_err(|_| io::Error::other("namespace thread panicked"))?
}

/// Accepts on `listener` and joins each connection to one that `connect` opens,
/// subject to `state`'s cut and delay.
fn spawn_proxy<C, F>(listener: StdListener, state: Arc<LinkState>, connect: C) -> Result<JoinHandle<()>>
where
    C: Fn() -> F + Send + Sync + 'static,
    F: std::future::Future<Output = io::Result<TcpStream>> + Send,
{
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let connect = Arc::new(connect);
    Ok(tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let (state, connect) = (Arc::clone(&state), Arc::clone(&connect));
            tokio::spawn(async move {
                if *state.cut.borrow() {
                    return;
                }
                let Ok(outbound) = connect().await else {
                    return;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let mut cut = state.cut.subscribe();
                let (read_in, write_in) = inbound.into_split();
                let (read_out, write_out) = outbound.into_split();
                tokio::select! {
                    _ = pass(read_in, write_out, &state) => {}
                    _ = pass(read_out, write_in, &state) => {}
                    _ = cut.wait_for(|cut| *cut) => {}
                }
            });
        }
    }))
}

/// Copies `from` to `to` until either closes, each chunk after the link's delay.
async fn pass(mut from: impl AsyncReadExt + Unpin, mut to: impl AsyncWriteExt + Unpin, state: &LinkState) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        let delay = state.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

/// Runs `ip` with `args`.
fn ip(args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .context("cannot run `ip` (iproute2)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
