//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>) carried by a
//! command: a client's `traceparent` and `tracestate` request headers are
//! kept in the command's `meta` under the same names, so that whoever
//! handles the command (an SDK handler, a webhook processor, which gets them
//! as headers again) can continue the client's trace.
//!
//! Only a well-formed `traceparent` is kept; a malformed one is ignored,
//! as the recommendation asks (a trace header never makes a request fail),
//! and so is a `tracestate` without it or longer than [`MAX_TRACESTATE_LEN`].

use crate::command::Meta;

/// `meta` member (and header) holding the W3C `traceparent`.
pub const TRACEPARENT: &str = "traceparent";
/// `meta` member (and header) holding the W3C `tracestate`.
pub const TRACESTATE: &str = "tracestate";
/// Longest `tracestate` kept: the 32 list members the recommendation
/// allows fit in 512 characters when each is short, and vendors keep their
/// entries short.
pub const MAX_TRACESTATE_LEN: usize = 512;

/// A command's trace context, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The `traceparent`, lower case, as the recommendation writes it.
    pub traceparent: String,
    /// The `tracestate`, when given and kept.
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// The trace context of a request whose `traceparent` header is
    /// `traceparent` and whose `tracestate` headers, joined with `,`, are
    /// `tracestate`; `None` when `traceparent` is malformed.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<Self> {
        let traceparent = traceparent.trim();
        if !valid_traceparent(traceparent) {
            return None;
        }
        let tracestate = tracestate
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= MAX_TRACESTATE_LEN && s.is_ascii())
            // Tabs may surround list members (optional white space).
            .filter(|s| !s.bytes().any(|b| b.is_ascii_control() && b != b'\t'))
            .map(str::to_string);
        Some(Self {
            // Version 00 is all the recommendation defines: a later one is
            // read as its first four fields and carried on as version 00
            // of them (its section 3.2.4), which every receiver reads.
            traceparent: format!("00{}", &traceparent[2..55]),
            tracestate,
        })
    }

    /// Records this context in `meta`.
    pub fn record(&self, meta: &mut Meta) {
        meta.insert(
            TRACEPARENT.into(),
            serde_json::Value::String(self.traceparent.clone()),
        );
        if let Some(state) = &self.tracestate {
            meta.insert(TRACESTATE.into(), serde_json::Value::String(state.clone()));
        }
    }

    /// The context recorded in `meta`, if any.
    pub fn of(meta: &Meta) -> Option<Self> {
        let parent = meta.get(TRACEPARENT)?.as_str()?;
        let state = meta.get(TRACESTATE).and_then(serde_json::Value::as_str);
        Self::parse(parent, state)
    }
}

/// Whether `s` is a `traceparent` as version 00 of the recommendation
/// writes it (`00-{32 hex trace id}-{16 hex parent id}-{2 hex flags}`,
/// lower case, ids not all zeros), or a later version that starts with
/// those four fields (and goes on after a `-`).
pub fn valid_traceparent(s: &str) -> bool {
    let b = s.as_bytes();
    let hex = |r: std::ops::Range<usize>| {
        b.get(r)
            .is_some_and(|x| x.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')))
    };
    let zeros = |r: std::ops::Range<usize>| b[r].iter().all(|&c| c == b'0');
    if b.len() < 55 || !hex(0..2) || &b[0..2] == b"ff" {
        return false;
    }
    let dashes = b[2] == b'-' && b[35] == b'-' && b[52] == b'-';
    if !(dashes && hex(3..35) && hex(36..52) && hex(53..55)) || zeros(3..35) || zeros(36..52) {
        return false;
    }
    match &b[0..2] {
        b"00" => b.len() == 55,
        _ => b.len() == 55 || b[55] == b'-',
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn well_formed_traceparents_are_kept() {
        assert!(valid_traceparent(GOOD));
        let ctx = TraceContext::parse(&format!(" {GOOD} "), Some("rojo=00f067aa0ba902b7")).unwrap();
        assert_eq!(ctx.traceparent, GOOD);
        assert_eq!(ctx.tracestate.as_deref(), Some("rojo=00f067aa0ba902b7"));
        // A later version: its first four fields are carried on, as 00.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes";
        assert_eq!(TraceContext::parse(later, None).unwrap().traceparent, GOOD);
        // Tabs around list members are allowed.
        let ctx = TraceContext::parse(GOOD, Some("a=1,\tb=2")).unwrap();
        assert_eq!(ctx.tracestate.as_deref(), Some("a=1,\tb=2"));
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b-01",
        ] {
            assert!(!valid_traceparent(bad), "{bad:?}");
            assert_eq!(TraceContext::parse(bad, Some("a=b")), None, "{bad:?}");
        }
    }

    #[test]
    fn a_tracestate_too_long_or_not_ascii_is_dropped() {
        let long = "a=".to_string() + &"b".repeat(MAX_TRACESTATE_LEN);
        for state in [long.as_str(), "é=1", "a=1\u{7}", "  "] {
            let ctx = TraceContext::parse(GOOD, Some(state)).unwrap();
            assert_eq!(ctx.tracestate, None, "{state:?}");
        }
    }

    #[test]
    fn the_context_goes_through_meta() {
        let ctx = TraceContext::parse(GOOD, Some("congo=t61rcWkgMzE")).unwrap();
        let mut meta = Meta::new();
        ctx.record(&mut meta);
        assert_eq!(meta[TRACEPARENT], GOOD);
        assert_eq!(TraceContext::of(&meta), Some(ctx));
        assert_eq!(TraceContext::of(&Meta::new()), None);
    }
}
