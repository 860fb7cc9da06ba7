//! Compressed answers for the read routes: a client sending
//! `Accept-Encoding: gzip` gets listings, pages of HTML, schemas, the
//! OpenAPI document and metrics gzipped (a page of 1,000 commands is
//! hundreds of kilobytes of JSON that compresses several times over).
//!
//! The intake (`POST /commands`) and live updates are left out on purpose:
//! the intake's answers are small and on the hot path, and an event stream
//! must reach its reader record by record, not when a compressor's buffer
//! fills.

use axum::Router;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::compression::{CompressionLayer, CompressionLevel};

use crate::state::AppState;

/// Answers smaller than this go out as they are: compressing them saves
/// less than a packet.
pub const MIN_COMPRESSED_BYTES: u16 = 1024;

/// `router` with its answers gzipped for clients that accept it (see the
/// module documentation), when over [`MIN_COMPRESSED_BYTES`] (those then
/// carry `Vary: Accept-Encoding`), at gzip's fastest level: the
/// compression runs on the thread serving the request, and a page of
/// several megabytes at the default level would hold it for long.
pub(crate) fn compressed(router: Router<AppState>) -> Router<AppState> {
    let predicate = SizeAbove::new(MIN_COMPRESSED_BYTES)
        .and(NotForContentType::SSE)
        .and(NotForContentType::IMAGES);
    router.layer(
        // Built with gzip only (the `compression-gzip` feature).
        CompressionLayer::new()
            .quality(CompressionLevel::Fastest)
            .compress_when(predicate),
    )
}
