//! The open-file limit of `cmdr serve`: every connection, segment file and
//! the index hold a file descriptor, and the soft limit many systems start
//! processes with (1,024) is far below
//! [`cmdr_gateway::server::DEFAULT_MAX_CONNECTIONS`]. At start-up the soft
//! limit is raised to the hard one (as Go and the JVM do), and a limit still
//! too low for the configured connections is reported, at start and again
//! once the log is open (one descriptor per segment file).

/// Descriptors kept for everything but connections: log segments and their
/// indexes, the index file, the listener, webhook clients.
const RESERVED: u64 = 1024;

/// Raises the soft open-file limit to the hard limit; warns when it stays
/// below `max_connections` plus [`RESERVED`].
#[cfg(unix)]
pub fn raise(max_connections: usize) {
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
    if limit.rlim_cur < needed {
        tracing::warn!(
            open_files = limit.rlim_cur,
            max_connections,
            "the open-file limit is below max_connections plus {RESERVED}: past it, new connections fail until others close (raise `ulimit -n` or lower max_connections)"
        );
    }
}

/// Elsewhere the limit is left as it is.
#[cfg(not(unix))]
pub fn raise(_max_connections: usize) {}

/// Once the log and index are open (each log segment holds a descriptor, so
/// a large log holds thousands): warns when what is left under the limit is
/// below `max_connections`. Linux only (it counts `/proc/self/fd`).
pub fn check_headroom(max_connections: usize) {
    #[cfg(target_os = "linux")]
    {
        let Ok(open) = std::fs::read_dir("/proc/self/fd").map(|d| d.count() as u64) else {
            return;
        };
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `limit` is a valid, writable `rlimit` for the call's duration.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return;
        }
        let left = limit.rlim_cur.saturating_sub(open);
        if left < max_connections as u64 + 64 {
            tracing::warn!(
                open_files = limit.rlim_cur,
                already_open = open,
                max_connections,
                "the log and index already hold {open} files, which leaves {left} for connections, fewer than max_connections: raise `ulimit -n` or lower max_connections"
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = max_connections;
}

#[cfg(all(test, unix))]
mod tests {
    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        super::raise(1);
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
