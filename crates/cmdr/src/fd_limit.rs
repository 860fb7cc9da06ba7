//! The open-file limit of `cmdr serve`: every connection, segment file and
//! the index hold a file descriptor, and the soft limit many systems start
//! processes with (1,024) is far below
//! [`cmdr_gateway::server::DEFAULT_MAX_CONNECTIONS`]. At start-up the soft
//! limit is raised to the hard one (as Go and the JVM do), and a limit still
//! too low for the configured connections is reported at start; once the
//! log is open (one descriptor per segment file), the connections served at
//! once are lowered to fit under it, with room kept for the log to grow: a
//! flood of connections must not take the descriptor a new segment needs,
//! which would stop the log, and the server with it.

/// Descriptors kept for everything but connections: log segments and their
/// indexes, the index file, the listener, webhook clients.
const RESERVED: u64 = 1024;

/// Raises the soft open-file limit to the hard limit; warns when it stays
/// below `max_connections` plus [`RESERVED`], unless `fitted_later`: the
/// caller fits its connections under the limit once its files are open
/// ([`connections_within_limit`], which warns then).
#[cfg(unix)]
pub fn raise(max_connections: usize, fitted_later: bool) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable `rlimit` for the call's duration.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "could not read the open-file limit");
        return;
    }
    // macOS refuses a soft limit of "unlimited" (its hard limit by
    // default) and any above OPEN_MAX (10,240), as Go's runtime knows.
    #[cfg(target_os = "macos")]
    let target = limit.rlim_max.min(10_240);
    #[cfg(not(target_os = "macos"))]
    let target = limit.rlim_max;
    if limit.rlim_cur < target {
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid `rlimit`; raising the soft limit up to
        // the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        } else {
            tracing::debug!(error = %std::io::Error::last_os_error(), "could not raise the open-file limit");
        }
    }
    let needed = max_connections as u64 + RESERVED;
    if !fitted_later && limit.rlim_cur < needed {
        tracing::warn!(
            open_files = limit.rlim_cur,
            max_connections,
            "the open-file limit is below max_connections plus {RESERVED}: past it, new connections fail until others close (raise `ulimit -n` or lower max_connections)"
        );
    }
}

/// Elsewhere the limit is left as it is.
#[cfg(not(unix))]
pub fn raise(_max_connections: usize, _fitted_later: bool) {}

/// Once the log and index are open (each log segment holds a descriptor, so
/// a large log holds thousands): the connections to serve at once,
/// `max_connections` or fewer, so that connections (and, with TLS,
/// `other_sockets` more: handshakes in progress) leave [`RESERVED`]
/// descriptors for the log to grow; lowered with a warning. Linux only (it
/// counts `/proc/self/fd`); elsewhere `max_connections`.
pub fn connections_within_limit(max_connections: usize, other_sockets: usize) -> usize {
    #[cfg(target_os = "linux")]
    {
        let Ok(open) = std::fs::read_dir("/proc/self/fd").map(|d| d.count() as u64) else {
            return max_connections;
        };
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `limit` is a valid, writable `rlimit` for the call's duration.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return max_connections;
        }
        let fits = fitting_connections(limit.rlim_cur, open, other_sockets as u64);
        if (fits as usize) < max_connections {
            tracing::warn!(
                open_files = limit.rlim_cur,
                already_open = open,
                max_connections,
                serving = fits,
                "the open-file limit leaves room for fewer connections than max_connections once the log is open: serving at most {fits} at once (raise `ulimit -n` for more)"
            );
            return fits as usize;
        }
        max_connections
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = other_sockets;
        max_connections
    }
}

/// Connections that fit under an open-file `limit` with `open` descriptors
/// taken and `other` sockets besides: what is left less those and
/// [`RESERVED`], or half of what is left when that is more; at least 1.
fn fitting_connections(limit: u64, open: u64, other: u64) -> u64 {
    let left = limit.saturating_sub(open);
    left.saturating_sub(other + RESERVED).max(left / 2).max(1)
}

#[cfg(all(test, unix))]
mod tests {
    #[test]
    fn connections_leave_room_for_the_log() {
        use super::fitting_connections as fits;
        assert_eq!(fits(1_048_576, 100, 0), 1_048_576 - 100 - 1024);
        assert_eq!(fits(1024, 100, 0), 462, "half of what is left");
        assert_eq!(fits(20_000, 100, 1152), 20_000 - 100 - 1152 - 1024);
        // A low limit with TLS: half of what is left, not one connection.
        assert_eq!(fits(1100, 100, 1152), 500);
        assert_eq!(fits(100, 200, 0), 1);
    }

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        super::raise(1, false);
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as in `raise`.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(limit.rlim_cur, limit.rlim_max);
    }
}
