//! The indexer's writer runs at background CPU priority while it keeps up,
//! and at normal priority while it lags or anyone waits for the index.
//!
//! Under a load of closed-loop clients, the CPU idles while each append
//! round waits for its `fdatasync` (every in-flight request is in it). At
//! background priority (Linux `SCHED_IDLE`) the indexer does its work in
//! those idle moments instead of taking turns with the HTTP workers:
//! in paired runs of `cmdr bench http` at 64 connections the machine's idle
//! CPU went from 22–26% to 14–15%, with 8–25% more commands per second.
//!
//! A thread cannot raise its own priority again without privileges, so the
//! writer ([`Writer`]) moves between two threads, only at transaction
//! boundaries (it never waits for a lock the other holds):
//!
//! - the *urgent* thread (the one [`run_writer`] is called on, normal
//!   priority) writes while batches are queued or anyone waits for the index
//!   (a position or an outcome, e.g. `?sync=true`, idempotent posts, reads
//!   that catch up first), then hands the writer to
//! - the *background* thread, which writes until anyone waits or
//!   [`LAG_BATCHES`](crate::indexer::LAG_BATCHES) batches pile up (the CPU
//!   is too busy for it), and then hands the writer back.
//!
//! So a saturated machine indexes at normal priority, as if this module did
//! not exist, and the index never falls behind by more than a few commit
//! intervals for long.

use std::sync::mpsc;

use crate::indexer::{Step, Writer};
use crate::{Index, IndexError, Result};

/// What the background thread hands back: the writer (urgent work), or the
/// end of indexing (every reader gone, or an error).
type Handback = Result<Option<Writer>>;

/// Runs the writer until every reader is gone, switching between this
/// thread and a background-priority one (see the module docs). If the
/// background thread cannot be started, everything runs on this thread.
pub(crate) fn run_writer(index: &Index, writer: Writer) -> Result<()> {
    let (to_background, background_inbox) = mpsc::channel::<Writer>();
    let (to_urgent, urgent_inbox) = mpsc::channel::<Handback>();
    let bg_index = index.clone();
    let spawned = std::thread::Builder::new()
        .name("cmdr-indexer-bg".into())
        .spawn(move || background(&bg_index, &background_inbox, &to_urgent));
    let background_thread = match spawned {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(error = %e, "could not start the background indexer thread; indexing at normal priority");
            None
        }
    };
    let result = urgent(
        index,
        writer,
        background_thread
            .is_some()
            .then_some((&to_background, &urgent_inbox)),
    );
    // The background thread holds the index open: let it end first.
    drop(to_background);
    if let Some(t) = background_thread {
        let _ = t.join();
    }
    result
}

/// The urgent side of [`run_writer`], on the calling thread; `background`
/// is the way to the background thread and back, if there is one.
fn urgent(
    index: &Index,
    mut writer: Writer,
    mut background: Option<(&mpsc::Sender<Writer>, &mpsc::Receiver<Handback>)>,
) -> Result<()> {
    loop {
        index.set_writer_thread();
        while background.is_none() || !writer.idle() || index.inner.waited() {
            if writer.step(index, false)? == Step::Closed {
                return writer.finish(index);
            }
        }
        let Some((to_background, from_background)) = background else {
            continue;
        };
        writer = match to_background.send(writer) {
            Ok(()) => match from_background.recv() {
                Ok(Ok(Some(w))) => w,
                Ok(Ok(None)) => return Ok(()),
                Ok(Err(e)) => return Err(e),
                // The background thread is gone with the writer (a panic).
                Err(_) => return Err(IndexError::Stopped),
            },
            // The background thread is gone: go on here.
            Err(mpsc::SendError(w)) => {
                background = None;
                w
            }
        };
    }
}

/// The background thread: lowers its priority, then writes whenever it is
/// handed the writer, until someone waits for the index or it lags.
fn background(index: &Index, inbox: &mpsc::Receiver<Writer>, outbox: &mpsc::Sender<Handback>) {
    lower_own_priority();
    while let Ok(mut writer) = inbox.recv() {
        index.set_writer_thread();
        let handback = loop {
            match writer.step(index, true) {
                Ok(Step::Indexed) if !index.inner.waited() && !writer.lagging() => {}
                Ok(Step::Indexed | Step::Yielded) => break Ok(Some(writer)),
                Ok(Step::Closed) => break writer.finish(index).map(|()| None),
                Err(e) => break Err(e),
            }
        };
        if outbox.send(handback).is_err() {
            return;
        }
    }
}

/// Moves the calling thread to `SCHED_IDLE`: it runs when a CPU would
/// otherwise idle (and still gets a small share when none does).
#[cfg(target_os = "linux")]
fn lower_own_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid `sched_param` for the duration of the call;
    // pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(),
            "could not lower the background indexer's priority");
    }
}

/// Elsewhere the background thread keeps the normal priority.
#[cfg(not(target_os = "linux"))]
fn lower_own_priority() {}
