//! Bearer-token authentication and roles.
//!
//! With no tokens configured the gateway is open and every command's
//! `meta.principal` is `"anonymous"` (fine on loopback, not beyond). With
//! tokens, every request but the health checks and the API description must
//! carry `Authorization: Bearer <token>`; the token names a principal
//! (recorded in `meta.principal` of the commands it sends) and grants roles:
//!
//! - `read`: every `GET` (resources, live updates, the WebSocket);
//! - `write`: `POST /commands`;
//! - `admin`: everything, including schemas and processor registrations.
//!
//! Browsers cannot set that header on an `EventSource` or a WebSocket
//! handshake, so the live endpoints (`GET /commands/updates`,
//! `/events/updates`, `/ws`) also take the token as an `access_token` query
//! parameter (RFC 6750, section 2.3); nothing else does, since URLs end up
//! in proxies' and browsers' histories.
//!
//! Key decision: the server keeps only the SHA-256 of each token, so a
//! configuration file never holds a usable secret; tokens are long random
//! strings (`cmdr token new`), for which a plain hash is as good as a slow one.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

/// The principal of requests when no tokens are configured.
pub const ANONYMOUS: &str = "anonymous";

/// Paths anyone may read, tokens or not: health checks and the API description.
const PUBLIC_PATHS: [&str; 4] = ["/healthz", "/readyz", "/openapi.json", "/docs"];

/// Paths that also take the token as an `access_token` query parameter.
pub const QUERY_TOKEN_PATHS: [&str; 3] = ["/commands/updates", "/events/updates", "/ws"];

/// The query parameter that carries a token on [`QUERY_TOKEN_PATHS`].
pub const ACCESS_TOKEN_PARAM: &str = "access_token";

/// What a token allows (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Every `GET`.
    Read,
    /// `POST /commands`.
    Write,
    /// Everything.
    Admin,
}

impl Role {
    /// The role's name in configuration files and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }

    /// The role a request needs: `POST /commands` writes, `GET /backup`
    /// (the whole log at once) and anything else that is not a `GET`,
    /// `HEAD` or `OPTIONS` request administers, the rest reads.
    pub fn required_for(method: &Method, path: &str) -> Self {
        if *method == Method::POST && path == "/commands" {
            Self::Write
        } else if path == "/backup" {
            Self::Admin
        } else if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            Self::Read
        } else {
            Self::Admin
        }
    }
}

/// Who a token belongs to and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Recorded as `meta.principal` of the commands sent with the token.
    pub principal: String,
    /// The roles granted; `admin` implies the others.
    pub roles: Vec<Role>,
}

impl Grant {
    /// Whether the grant covers `role`.
    pub fn allows(&self, role: Role) -> bool {
        self.roles.contains(&role) || self.roles.contains(&Role::Admin)
    }
}

/// The principal of a request, put in its extensions by the authentication
/// layer (absent when no tokens are configured).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal(pub String);

/// The SHA-256 of the token a request was admitted with, put in its
/// extensions by the authentication layer: live streams end when a reload
/// takes that token away (see [`TokenTable::changes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credential(pub [u8; 32]);

/// The accepted tokens, each known by its SHA-256.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], Grant>,
}

/// The tokens a running gateway accepts, replaceable while it runs (`cmdr
/// serve` reloads them from its configuration file on SIGHUP). A request
/// is checked against the table current when it arrives; live streams
/// (SSE, WebSocket) also end when a replacement drops their token.
#[derive(Debug)]
pub struct TokenTable {
    current: RwLock<Arc<Tokens>>,
    generation: watch::Sender<u64>,
}

impl Default for TokenTable {
    fn default() -> Self {
        Self::new(Tokens::default())
    }
}

impl TokenTable {
    /// A table of `tokens`.
    pub fn new(tokens: Tokens) -> Self {
        Self {
            current: RwLock::new(Arc::new(tokens)),
            generation: watch::channel(0).0,
        }
    }

    /// The tokens accepted now.
    pub fn current(&self) -> Arc<Tokens> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Accepts `tokens` from now on, instead of the earlier ones.
    pub fn replace(&self, tokens: Tokens) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tokens);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Changes with every [`TokenTable::replace`].
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

/// A token configuration that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// The hash is not 64 hexadecimal digits. The value itself is not
    /// kept: it may be a token pasted by mistake, and errors are logged.
    #[error("the sha256 of {principal:?} must be 64 hexadecimal digits, not {chars} characters{}",
        if *.token_like { " (it looks like a token: list its hash, as `cmdr token new` prints it)" } else { "" })]
    BadHash {
        /// The principal of the entry.
        principal: String,
        /// Characters in the value given.
        chars: usize,
        /// Whether the value looks like a token (`cmdr_…`).
        token_like: bool,
    },
    /// The principal is empty or not printable ASCII.
    #[error("principal must be 1 to 255 printable ASCII characters, not {0:?}")]
    BadPrincipal(String),
    /// No role given.
    #[error("token of {0:?} grants no role")]
    NoRole(String),
    /// The same token twice.
    #[error("the token of {0:?} is listed twice")]
    Duplicate(String),
}

impl Tokens {
    /// The SHA-256 of `token` in hexadecimal, as configuration files list it.
    pub fn hash_hex(token: &str) -> String {
        hex::encode(Sha256::digest(token.as_bytes()))
    }

    /// Adds the token whose SHA-256 is `sha256_hex`.
    ///
    /// # Errors
    /// [`TokenError`] for a malformed hash or principal, no role, or a token
    /// already added.
    pub fn add_hash(&mut self, sha256_hex: &str, grant: Grant) -> Result<(), TokenError> {
        let mut hash = [0u8; 32];
        hex::decode_to_slice(sha256_hex.trim(), &mut hash).map_err(|_| TokenError::BadHash {
            principal: grant.principal.clone(),
            chars: sha256_hex.trim().chars().count(),
            token_like: sha256_hex.trim().starts_with("cmdr_"),
        })?;
        let p = &grant.principal;
        validate_principal(p)?;
        if grant.roles.is_empty() {
            return Err(TokenError::NoRole(p.clone()));
        }
        if self.by_hash.contains_key(&hash) {
            return Err(TokenError::Duplicate(p.clone()));
        }
        self.by_hash.insert(hash, grant);
        Ok(())
    }

    /// Adds `token` itself (hashed here), for programs that embed the gateway.
    ///
    /// # Errors
    /// As [`Tokens::add_hash`].
    pub fn add_token(&mut self, token: &str, grant: Grant) -> Result<(), TokenError> {
        self.add_hash(&Self::hash_hex(token), grant)
    }

    /// The grant of `token`, if it is one of the accepted tokens.
    pub fn grant(&self, token: &str) -> Option<&Grant> {
        self.by_hash.get(&Self::hash(token))
    }

    /// Whether the token whose SHA-256 is `credential` is accepted and
    /// grants `role`.
    pub fn accepts(&self, credential: &Credential, role: Role) -> bool {
        self.by_hash
            .get(&credential.0)
            .is_some_and(|grant| grant.allows(role))
    }

    fn hash(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    /// Whether no token is configured.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// How many tokens are configured.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }
}

/// Checks a principal's name: 1 to 255 printable ASCII characters (spaces
/// allowed), as it goes into `meta.principal`.
///
/// # Errors
/// [`TokenError::BadPrincipal`].
pub fn validate_principal(p: &str) -> Result<(), TokenError> {
    if p.is_empty() || p.len() > 255 || !p.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(TokenError::BadPrincipal(p.to_string()));
    }
    Ok(())
}

/// The bearer token of a request, if it has one: its `Authorization`
/// header, or on a `GET` of [`QUERY_TOKEN_PATHS`] its `access_token`.
fn bearer(req: &Request) -> Option<String> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_string())
            .filter(|t| !t.is_empty());
    }
    if req.method() != Method::GET || !QUERY_TOKEN_PATHS.contains(&req.uri().path()) {
        return None;
    }
    let query = req.uri().query()?;
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .ok()?
        .into_iter()
        .find(|(k, v)| k == ACCESS_TOKEN_PARAM && !v.is_empty())
        .map(|(_, v)| v)
}

/// The authentication layer (see the module docs); lets everything through
/// when no tokens are configured.
pub(crate) async fn authenticate(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(table) = state.inner.config.tokens.as_deref() else {
        if state.inner.config.access_log {
            // An open server's every request is by the principal its
            // commands record.
            let mut res = next.run(req).await;
            res.extensions_mut().insert(Principal(ANONYMOUS.into()));
            return res;
        }
        return next.run(req).await;
    };
    let tokens = table.current();
    if PUBLIC_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let Some(token) = bearer(&req) else {
        return ApiError::Unauthorized(
            "this server requires Authorization: Bearer <token> (live updates also take ?access_token=)"
                .into(),
        )
        .into_response();
    };
    let credential = Credential(Tokens::hash(&token));
    let Some(grant) = tokens.by_hash.get(&credential.0) else {
        return ApiError::Unauthorized("the bearer token is not valid".into()).into_response();
    };
    let needed = Role::required_for(req.method(), req.uri().path());
    if !grant.allows(needed) {
        return ApiError::Forbidden(format!(
            "{:?} lacks the {} role needed for {} {}",
            grant.principal,
            needed.as_str(),
            req.method(),
            req.uri().path()
        ))
        .into_response();
    }
    let principal = Principal(grant.principal.clone());
    if state.inner.config.access_log {
        // For the access log, outside this layer.
        req.extensions_mut().insert(principal.clone());
        req.extensions_mut().insert(credential);
        let mut res = next.run(req).await;
        res.extensions_mut().insert(principal);
        return res;
    }
    req.extensions_mut().insert(principal);
    req.extensions_mut().insert(credential);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(principal: &str, roles: &[Role]) -> Grant {
        Grant {
            principal: principal.into(),
            roles: roles.to_vec(),
        }
    }

    #[test]
    fn tokens_are_found_by_hash_and_checked_for_roles() {
        let mut tokens = Tokens::default();
        tokens
            .add_token("secret-1", grant("billing", &[Role::Write]))
            .unwrap();
        tokens
            .add_hash(&Tokens::hash_hex("secret-2"), grant("ops", &[Role::Admin]))
            .unwrap();
        assert_eq!(tokens.grant("secret-1").unwrap().principal, "billing");
        assert!(tokens.grant("secret-1").unwrap().allows(Role::Write));
        assert!(!tokens.grant("secret-1").unwrap().allows(Role::Read));
        assert!(tokens.grant("secret-2").unwrap().allows(Role::Read));
        assert!(tokens.grant("secret-3").is_none());
        assert_eq!(
            tokens.add_token("secret-1", grant("again", &[Role::Read])),
            Err(TokenError::Duplicate("again".into()))
        );
    }

    #[test]
    fn bad_token_entries_are_refused() {
        let mut tokens = Tokens::default();
        assert!(matches!(
            tokens.add_hash("abc", grant("x", &[Role::Read])),
            Err(TokenError::BadHash { chars: 3, .. })
        ));
        // A token pasted as its hash: the error neither repeats it nor
        // leaves the operator guessing.
        let pasted = format!("cmdr_{}", "3f9c".repeat(16));
        let err = tokens
            .add_hash(&pasted, grant("x", &[Role::Read]))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("3f9c"), "{err}");
        assert!(err.contains("looks like a token"), "{err}");
        assert!(matches!(
            tokens.add_token("t", grant("", &[Role::Read])),
            Err(TokenError::BadPrincipal(_))
        ));
        assert!(matches!(
            tokens.add_token("t", grant("x", &[])),
            Err(TokenError::NoRole(_))
        ));
        assert!(tokens.is_empty());
    }

    #[test]
    fn the_role_follows_the_method_and_path() {
        assert_eq!(Role::required_for(&Method::POST, "/commands"), Role::Write);
        assert_eq!(Role::required_for(&Method::GET, "/commands"), Role::Read);
        assert_eq!(Role::required_for(&Method::GET, "/ws"), Role::Read);
        assert_eq!(
            Role::required_for(&Method::PUT, "/schemas/deposit"),
            Role::Admin
        );
        assert_eq!(
            Role::required_for(&Method::DELETE, "/processors/p"),
            Role::Admin
        );
        assert_eq!(Role::required_for(&Method::POST, "/other"), Role::Admin);
        assert_eq!(Role::required_for(&Method::GET, "/backup"), Role::Admin);
    }
}
