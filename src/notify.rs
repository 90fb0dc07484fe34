//! systemd readiness and watchdog notifications (`sd_notify` protocol):
//! datagrams to the socket named by `NOTIFY_SOCKET`. Without that variable
//! (not started by systemd with `Type=notify`) every call does nothing.

use std::os::unix::net::UnixDatagram;

/// Sends one notification, e.g. `READY=1` or `WATCHDOG=1`. Returns whether it
/// was delivered; failures are logged, never fatal.
pub fn notify(message: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let result = (|| -> std::io::Result<()> {
        let socket = UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            // Abstract socket (Linux): the name without the leading '@'.
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(message.as_bytes(), &addr)?;
        } else {
            socket.send_to(message.as_bytes(), &path)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, message, "systemd notification not delivered");
            false
        }
    }
}

/// The watchdog interval systemd expects pings within (`WATCHDOG_USEC`,
/// set with `WatchdogSec=`), if any.
pub fn watchdog_interval() -> Option<std::time::Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    (usec > 0).then(|| std::time::Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_reach_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        // The only test of this module touching the environment.
        std::env::set_var("NOTIFY_SOCKET", &path);
        assert!(notify("READY=1\nSTATUS=ready"));
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ready");
        std::env::remove_var("NOTIFY_SOCKET");
        assert!(!notify("WATCHDOG=1"), "no socket, nothing sent");
    }
}
