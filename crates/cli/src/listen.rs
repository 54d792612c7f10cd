//! Where a bank or the dashboard listens: on a socket `up` bound for it before anything
//! connected out, or on its own.
//!
//! `up`'s default ports for the banks and the dashboard (56080-56082) lie in Linux's
//! ephemeral range (32768-60999), from which the kernel picks the local port of every
//! outgoing connection, so a connection made during start-up (the broker's to the name
//! server, a bank's to the broker) could take one before its part bound it. `up`
//! therefore binds them all first, while nothing runs, and hands each part its socket,
//! whose file descriptor [`LISTEN_FD_VAR`] names.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::process::CommandExt;

use anyhow::{Context, Result};

/// The variable that tells a part it inherited its listening socket, and as which
/// file descriptor.
pub const LISTEN_FD_VAR: &str = "TXBANK_LISTEN_FD";

/// The listener of a part meant to listen on `addr`: the socket it inherited, or a new
/// one bound to `addr`. A port another process holds is named with that process.
pub fn listener(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    let listener = match std::env::var(LISTEN_FD_VAR) {
        Ok(fd) => {
            let fd: RawFd = fd
                .parse()
                .with_context(|| format!("{LISTEN_FD_VAR}={fd:?} is no file descriptor"))?;
            // SAFETY: the parent that set the variable handed this process a listening
            // socket as `fd`, which nothing else in this process owns.
            unsafe { std::net::TcpListener::from_raw_fd(fd) }
        }
        Err(_) => bind(addr)?,
    };
    listener.set_nonblocking(true)?;
    Ok(tokio::net::TcpListener::from_std(listener)?)
}

/// A socket listening on `addr`, or an error that says which port is taken and, when
/// this machine tells, by which process.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener> {
    std::net::TcpListener::bind(addr).map_err(|error| {
        let holder = holder_of(addr.port())
            .map(|who| format!(" (held by {who})"))
            .unwrap_or_default();
        anyhow::anyhow!("cannot listen on {addr}: {error}{holder}")
    })
}

/// Hands `listener` down to the process `command` starts: its descriptor stays open
/// across exec, and [`LISTEN_FD_VAR`] names it. Keep `listener` until the process has
/// started, then drop it.
pub fn hand_down(command: &mut std::process::Command, listener: &std::net::TcpListener) {
    let fd = listener.as_raw_fd();
    command.env(LISTEN_FD_VAR, fd.to_string());
    // SAFETY: fcntl is async-signal-safe and touches no memory of the parent; `fd` is
    // open in the child, which forked while the parent held `listener`.
    unsafe {
        command.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The process holding TCP port `port` on this machine, as `PID (NAME)`, read from
/// `/proc`; `None` when it cannot be told (another user's process, say).
fn holder_of(port: u16) -> Option<String> {
    // The sockets on that port, as a process's file descriptors name them.
    let sockets: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| {
            let on_port = |line: &str| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let local_port = u16::from_str_radix(fields.get(1)?.rsplit_once(':')?.1, 16).ok()?;
                if local_port != port {
                    return None;
                }
                Some(format!("socket:[{}]", fields.get(9)?))
            };
            table.lines().skip(1).filter_map(on_port).collect::<Vec<_>>()
        })
        .collect();
    // Only the numbered entries of /proc are processes (`self` is this one again).
    let processes = std::fs::read_dir("/proc").ok()?.flatten();
    for process in processes.filter(|entry| entry.file_name().to_string_lossy().parse::<u32>().is_ok()) {
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        let holds = fds
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .any(|target| sockets.iter().any(|socket| target.as_os_str() == socket.as_str()));
        if holds {
            let name = std::fs::read_to_string(process.path().join("comm")).unwrap_or_default();
            return Some(format!("{} ({})", process.file_name().to_string_lossy(), name.trim()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_named_with_the_process_that_holds_it() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let error = bind(addr).unwrap_err().to_string();
        assert!(error.contains(&format!("cannot listen on {addr}")), "{error}");
        assert!(error.contains(&format!("held by {}", std::process::id())), "{error}");
    }
}
