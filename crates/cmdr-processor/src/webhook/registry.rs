//! Where webhook processors are registered: records in the `_cmdr_processors`
//! topic, last write per name wins, a tombstone (empty value) deletes.
//!
//! Key decision: the log is the store, so registrations are as durable as
//! commands and every gateway instance sees the same set by reading the topic.
//! Reads refresh from the topic first, so a registration made through another
//! instance is visible.
//!
//! Record format (key = the name, value = JSON, version 1):
//! `{"actions": ["pay", ...], "url": "http://...", "secret": "..."}` (`secret`
//! optional); an empty value is a deletion.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use cmdr_contract::{header, validate_action, Violation, Violations};
use cmdr_log::{Log, LogError, Record};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::ProcessorError;

/// The topic registrations are stored in (one partition).
pub const PROCESSORS_TOPIC: &str = "_cmdr_processors";
/// Longest processor name, in bytes.
pub const MAX_NAME_LEN: usize = 100;
/// Most actions one webhook processor may handle.
pub const MAX_ACTIONS: usize = 1000;
/// Longest URL, in bytes.
pub const MAX_URL_LEN: usize = 2048;
/// Shortest signing secret, in bytes.
pub const MIN_SECRET_LEN: usize = 16;
/// Longest signing secret, in bytes.
pub const MAX_SECRET_LEN: usize = 256;
/// Records read per call while refreshing.
const REFRESH_BATCH: usize = 1024;

/// A webhook processor's registration: which command actions it handles and
/// where cmdr POSTs them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookRegistration {
    /// Command actions this processor handles (at least one, no duplicates).
    pub actions: Vec<String>,
    /// `http://` or `https://` URL cmdr POSTs each command to.
    pub url: String,
    /// When set, each request carries a `cmdr-signature` header: an
    /// HMAC-SHA256 of its timestamp and body under this secret, so the
    /// processor can tell cmdr's requests from anyone else's (`WEBHOOKS.md`).
    /// Never shown by the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl WebhookRegistration {
    /// Reads and checks a registration body, reporting every problem with a JSON pointer.
    ///
    /// # Errors
    /// [`Violations`]: not an object, missing or empty `actions`, invalid or
    /// repeated action names, missing `url` or one that is not `http://` or `https://`, unknown fields.
    pub fn from_value(value: Value) -> Result<Self, Violations> {
        let Value::Object(mut obj) = value else {
            return Err(Violations(vec![Violation::new(
                "",
                "a registration must be a JSON object",
            )]));
        };
        let mut violations = Vec::new();
        let mut actions = Vec::new();
        match obj.remove("actions") {
            Some(Value::Array(items)) if items.is_empty() => violations.push(Violation::new(
                "/actions",
                "actions must name at least one action",
            )),
            Some(Value::Array(items)) if items.len() > MAX_ACTIONS => violations.push(
                Violation::new("/actions", format!("at most {MAX_ACTIONS} actions")),
            ),
            Some(Value::Array(items)) => {
                for (i, item) in items.into_iter().enumerate() {
                    let pointer = format!("/actions/{i}");
                    match item {
                        Value::String(a) => {
                            if let Err(v) = validate_action(&a, &pointer) {
                                violations.push(v);
                            } else if actions.contains(&a) {
                                violations.push(Violation::new(
                                    pointer,
                                    format!("{a:?} is listed twice"),
                                ));
                            } else {
                                actions.push(a);
                            }
                        }
                        _ => violations.push(Violation::new(pointer, "an action must be a string")),
                    }
                }
            }
            Some(_) => violations.push(Violation::new(
                "/actions",
                "actions must be an array of action names",
            )),
            None => violations.push(Violation::new("/actions", "actions is required")),
        }
        let url = match obj.remove("url") {
            Some(Value::String(u)) => {
                if let Err(message) = check_url(&u) {
                    violations.push(Violation::new("/url", message));
                }
                u
            }
            Some(_) => {
                violations.push(Violation::new("/url", "url must be a string"));
                String::new()
            }
            None => {
                violations.push(Violation::new("/url", "url is required"));
                String::new()
            }
        };
        let secret = match obj.remove("secret") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                let printable = s.bytes().all(|b| b.is_ascii_graphic());
                if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&s.len()) || !printable {
                    violations.push(Violation::new(
                        "/secret",
                        format!("secret must be {MIN_SECRET_LEN} to {MAX_SECRET_LEN} printable ASCII characters without spaces"),
                    ));
                }
                Some(s)
            }
            Some(_) => {
                violations.push(Violation::new("/secret", "secret must be a string"));
                None
            }
        };
        for unknown in obj.keys() {
            violations.push(Violation::new(
                format!("/{}", unknown.replace('~', "~0").replace('/', "~1")),
                "unknown field (expected actions, url, secret)",
            ));
        }
        if violations.is_empty() {
            Ok(Self {
                actions,
                url,
                secret,
            })
        } else {
            Err(Violations(violations))
        }
    }

    /// Whether this processor handles command `action`.
    pub fn handles(&self, action: &str) -> bool {
        self.actions.iter().any(|a| a == action)
    }
}

fn check_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!("url must be at most {MAX_URL_LEN} bytes"));
    }
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return Err("url must start with http:// or https://".into());
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() {
        return Err("url must name a host, e.g. http://127.0.0.1:8080/handle".into());
    }
    if host.contains(char::is_whitespace) {
        return Err(format!("url's host {host:?} has a space in it"));
    }
    // Read as the HTTP client will read it: a URL it cannot call (a port
    // past 65535, a host with control characters) is refused now, not
    // found out by every command failing its attempts.
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("url is not a valid URL: {e}"))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("url must name a host, e.g. http://127.0.0.1:8080/handle".into());
    }
    // Credentials that are not UTF-8 once decoded are not sent as Basic
    // auth: the client would keep them in the URL, and name it in errors.
    let utf8 = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .is_ok()
    };
    if !utf8(parsed.username()) || !parsed.password().is_none_or(utf8) {
        return Err("url's user name and password must be UTF-8 once percent-decoded".into());
    }
    Ok(())
}

/// `url` with the credentials it may carry (`http://user:password@host/`,
/// sent as Basic auth) hidden: the password becomes `***`, or a user name
/// given alone (often a token) does. What the API shows of a registration,
/// and what an error names, to readers who must not learn them. The URL is
/// read as the HTTP client reads it (a `\` ends the host, as in browsers).
pub fn redacted_url(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        // Never registered so; all the same, nothing after `//` is shown.
        let scheme = url.split("//").next().unwrap_or_default();
        return format!("{scheme}//***");
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    } else if !parsed.username().is_empty() {
        let _ = parsed.set_username("***");
    } else {
        return url.to_string();
    }
    parsed.to_string()
}

/// Checks a processor name: 1 to [`MAX_NAME_LEN`] ASCII letters, digits, `-`
/// or `_` (it becomes part of a consumer group name).
///
/// # Errors
/// A [`Violation`] at `/name`.
pub fn validate_name(name: &str) -> Result<(), Violation> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(Violation::new(
            "/name",
            format!("name must be 1 to {MAX_NAME_LEN} bytes"),
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(Violation::new(
            "/name",
            "name may contain only letters, digits, '-' and '_'",
        ));
    }
    Ok(())
}

/// What can go wrong with the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The name or registration is invalid (HTTP: 422 with the violations).
    #[error("invalid registration: {0}")]
    Invalid(#[from] Violations),
    /// The log failed (HTTP: 500).
    #[error(transparent)]
    Processor(#[from] ProcessorError),
}

/// The registry's view of the topic: registrations and the next offset to read.
#[derive(Debug, Default)]
struct View {
    registrations: BTreeMap<String, WebhookRegistration>,
    next: u64,
}

/// Registered webhook processors; cheap to clone, shared by the gateway (which
/// exposes `PUT/GET/DELETE /processors/{name}`) and the runner supervisor.
#[derive(Clone)]
pub struct WebhookRegistry {
    log: Arc<dyn Log>,
    /// The view, refreshed from the topic before each read; a mutex so that
    /// concurrent refreshes do not apply records twice.
    view: Arc<Mutex<View>>,
    /// Held from a write's checks to its append, so that two registrations
    /// of one action under different names cannot both pass the check.
    writes: Arc<Mutex<()>>,
    /// Actions that processors built into this server handle (SDK
    /// processors run in-process), with what handles each: refused to
    /// webhooks (see [`WebhookRegistry::reserve`]).
    reserved: Arc<std::sync::Mutex<std::collections::BTreeMap<String, String>>>,
}

impl WebhookRegistry {
    /// Opens the registry, creating its topic if needed and reading it.
    ///
    /// # Errors
    /// [`ProcessorError::Log`].
    pub async fn open(log: Arc<dyn Log>) -> Result<Self, ProcessorError> {
        log.create_topic(PROCESSORS_TOPIC, 1)
            .await
            .map_err(|e| ProcessorError::log(format!("creating {PROCESSORS_TOPIC}"), e))?;
        let registry = Self {
            log,
            view: Arc::new(Mutex::new(View::default())),
            writes: Arc::default(),
            reserved: Arc::default(),
        };
        drop(registry.refresh().await?);
        Ok(registry)
    }

    /// Reserves `actions` for `owner`, a processor built into this server:
    /// a webhook registration of any of them is refused from now on (a
    /// command would get two outcomes).
    ///
    /// # Errors
    /// [`ProcessorError::Config`] when a registered webhook already has one
    /// of them (nothing is reserved), [`ProcessorError::Log`].
    pub async fn reserve(&self, owner: &str, actions: &[&str]) -> Result<(), ProcessorError> {
        let _writing = self.writes.lock().await;
        let view = self.refresh().await?;
        for action in actions {
            if let Some((name, _)) = view.registrations.iter().find(|(_, r)| r.handles(action)) {
                return Err(ProcessorError::Config(format!(
                    "webhook processor {name} is registered for {action}, which {owner} handles: \
                     a command would get two outcomes (DELETE /processors/{name} first, \
                     with the server running without {owner})"
                )));
            }
        }
        let mut reserved = self.reserved.lock().unwrap_or_else(|p| p.into_inner());
        for action in actions {
            reserved.insert((*action).to_string(), owner.to_string());
        }
        Ok(())
    }

    /// Registers (or replaces) processor `name`; durable when this returns.
    ///
    /// # Errors
    /// [`RegistryError::Invalid`] for a bad name or registration (nothing is
    /// written), [`RegistryError::Processor`] when the log fails.
    pub async fn put(
        &self,
        name: &str,
        registration: WebhookRegistration,
    ) -> Result<(), RegistryError> {
        // One action, one processor: two would give a command two outcomes.
        // Checked and written under `writes`, so concurrent puts through this
        // registry (every cmdr serve has one) take turns.
        let _writing = self.writes.lock().await;
        let registration = self.checked(name, registration).await?;
        let value = serde_json::to_vec(&registration).unwrap_or_default();
        self.write(name, value).await?;
        Ok(())
    }

    /// Whether [`WebhookRegistry::put`] would take `registration` as `name`
    /// now, without writing it: for a caller with checks of its own to run
    /// between this one and the write (`put` checks again).
    ///
    /// # Errors
    /// As [`WebhookRegistry::put`].
    pub async fn check(
        &self,
        name: &str,
        registration: &WebhookRegistration,
    ) -> Result<(), RegistryError> {
        self.checked(name, registration.clone()).await.map(drop)
    }

    /// `registration` as `put` would write it: its name and fields checked
    /// as an HTTP body's are, and none of its actions handled by another
    /// processor.
    async fn checked(
        &self,
        name: &str,
        registration: WebhookRegistration,
    ) -> Result<WebhookRegistration, RegistryError> {
        validate_name(name).map_err(|v| Violations(vec![v]))?;
        // Re-check through the same path as an HTTP body, so both agree.
        let value = serde_json::to_value(&registration).unwrap_or(Value::Null);
        let registration = WebhookRegistration::from_value(value)?;
        let taken: Vec<Violation> = {
            let view = self.refresh().await?;
            let reserved = self.reserved.lock().unwrap_or_else(|p| p.into_inner());
            registration
                .actions
                .iter()
                .enumerate()
                .filter_map(|(i, action)| {
                    if let Some(owner) = reserved.get(action) {
                        return Some(Violation::new(
                            format!("/actions/{i}"),
                            format!("{action} is already handled by {owner}, built into this server (an action has one processor)"),
                        ));
                    }
                    let (other, _) = view
                        .registrations
                        .iter()
                        .find(|(other, r)| other.as_str() != name && r.handles(action))?;
                    Some(Violation::new(
                        format!("/actions/{i}"),
                        format!("{action} is already handled by processor {other} (an action has one processor)"),
                    ))
                })
                .collect()
        };
        if !taken.is_empty() {
            return Err(Violations(taken).into());
        }
        Ok(registration)
    }

    /// Processor `name`'s registration, if any.
    ///
    /// # Errors
    /// [`ProcessorError::Log`].
    pub async fn get(&self, name: &str) -> Result<Option<WebhookRegistration>, ProcessorError> {
        let view = self.refresh().await?;
        Ok(view.registrations.get(name).cloned())
    }

    /// Processor `name`'s registration and the offset of the registrations
    /// topic it reflects (every record before it has been read).
    pub(crate) async fn current(
        &self,
        name: &str,
    ) -> Result<(Option<WebhookRegistration>, u64), ProcessorError> {
        let view = self.refresh().await?;
        Ok((view.registrations.get(name).cloned(), view.next))
    }

    /// Every registration, by name.
    ///
    /// # Errors
    /// [`ProcessorError::Log`].
    pub async fn list(&self) -> Result<BTreeMap<String, WebhookRegistration>, ProcessorError> {
        Ok(self.refresh().await?.registrations.clone())
    }

    /// Deletes processor `name` (a tombstone record); returns whether it existed.
    ///
    /// # Errors
    /// [`ProcessorError::Log`].
    pub async fn delete(&self, name: &str) -> Result<bool, ProcessorError> {
        let _writing = self.writes.lock().await;
        if self.get(name).await?.is_none() {
            return Ok(false);
        }
        self.write(name, Vec::new()).await?;
        Ok(true)
    }

    /// Resolves when the topic has a record the registry has not read yet
    /// (something was put or deleted, possibly through another instance).
    ///
    /// # Errors
    /// [`ProcessorError::Log`].
    pub async fn changed(&self) -> Result<(), ProcessorError> {
        let next = self.view.lock().await.next;
        self.log
            .wait_for(PROCESSORS_TOPIC, 0, next)
            .await
            .map_err(|e| ProcessorError::log(format!("waiting on {PROCESSORS_TOPIC}"), e))
    }

    async fn write(&self, name: &str, value: Vec<u8>) -> Result<(), ProcessorError> {
        let record = Record::new(Bytes::from(name.to_string().into_bytes()), value)
            .with_header(header::CONTENT_TYPE, &b"application/json"[..]);
        self.log
            .append(PROCESSORS_TOPIC, vec![record])
            .await
            .map_err(|e| ProcessorError::log(format!("appending to {PROCESSORS_TOPIC}"), e))?;
        drop(self.refresh().await?);
        Ok(())
    }

    /// Applies the records appended since the last refresh.
    async fn refresh(&self) -> Result<tokio::sync::MutexGuard<'_, View>, ProcessorError> {
        let mut view = self.view.lock().await;
        loop {
            let batch = match self
                .log
                .read(PROCESSORS_TOPIC, 0, view.next, REFRESH_BATCH)
                .await
            {
                Ok(b) => b,
                Err(LogError::OffsetOutOfRange { start, .. }) => {
                    view.next = start;
                    continue;
                }
                Err(e) => {
                    return Err(ProcessorError::log(
                        format!("reading {PROCESSORS_TOPIC}"),
                        e,
                    ))
                }
            };
            if batch.is_empty() {
                return Ok(view);
            }
            for record in batch {
                view.next = record.offset + 1;
                let Some(name) = record
                    .key
                    .as_ref()
                    .and_then(|k| std::str::from_utf8(k).ok())
                else {
                    continue;
                };
                if record.value.is_empty() {
                    view.registrations.remove(name);
                    continue;
                }
                match serde_json::from_slice::<WebhookRegistration>(&record.value) {
                    Ok(r) => {
                        view.registrations.insert(name.to_string(), r);
                    }
                    Err(e) => {
                        tracing::warn!(offset = record.offset, error = %e, "undecodable registration skipped")
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn reserved_actions_are_refused_to_webhooks_and_reserving_a_taken_one_fails() {
        let log: Arc<dyn Log> = Arc::new(cmdr_log::memory::MemoryLog::new());
        let registry = WebhookRegistry::open(log).await.unwrap();
        let reg = |actions: &[&str]| WebhookRegistration {
            actions: actions.iter().map(|a| a.to_string()).collect(),
            url: "http://127.0.0.1:9/x".into(),
            secret: None,
        };
        registry.put("ship", reg(&["ship"])).await.unwrap();
        let taken = registry.reserve("the example", &["pay", "ship"]).await;
        assert!(
            matches!(&taken, Err(ProcessorError::Config(m)) if m.contains("ship")),
            "{taken:?}"
        );
        // Nothing was reserved: pay is still free.
        registry.put("pay", reg(&["pay"])).await.unwrap();
        registry.delete("pay").await.unwrap();
        registry.reserve("the example", &["pay"]).await.unwrap();
        match registry.put("billing", reg(&["refund", "pay"])).await {
            Err(RegistryError::Invalid(v)) => assert_eq!(v.0[0].pointer, "/actions/1"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn validates_with_pointers() {
        let err = WebhookRegistration::from_value(json!({
            "actions": ["pay", "bad name", "pay", 3], "url": "ftp://x", "extra": 1
        }))
        .unwrap_err();
        let pointers: Vec<_> = err.0.iter().map(|v| v.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            ["/actions/1", "/actions/2", "/actions/3", "/url", "/extra"]
        );
        let ok = WebhookRegistration::from_value(
            json!({"actions": ["pay"], "url": "http://127.0.0.1:9/x"}),
        )
        .unwrap();
        assert!(ok.handles("pay"));
        assert_eq!(ok.secret, None);
        let err = WebhookRegistration::from_value(
            json!({"actions": ["pay"], "url": "http://127.0.0.1:9/x", "secret": "short"}),
        )
        .unwrap_err();
        assert_eq!(err.0[0].pointer, "/secret");
        let signed = WebhookRegistration::from_value(json!({
            "actions": ["pay"], "url": "http://127.0.0.1:9/x", "secret": "0123456789abcdef"
        }))
        .unwrap();
        assert_eq!(signed.secret.as_deref(), Some("0123456789abcdef"));
        assert!(validate_name("billing_v2").is_ok());
        assert!(validate_name("a/b").is_err());
        // Only what the HTTP client can call.
        for url in [
            "http://a\u{8}b/",
            "http://exa%mple/",
            "http://a:99999/",
            "http://[zz]/",
            "https://:80/",
            // Not sent as Basic auth by the client, which would name it.
            "http://%FF:s3cret@127.0.0.1:9/hook",
        ] {
            let err = WebhookRegistration::from_value(json!({"actions": ["pay"], "url": url}))
                .unwrap_err();
            assert_eq!(err.0[0].pointer, "/url", "{url}");
        }
        for url in ["http://localhost:8080", "https://user:pw@example.com/a?b#c"] {
            WebhookRegistration::from_value(json!({"actions": ["pay"], "url": url}))
                .unwrap_or_else(|e| panic!("{url}: {e:?}"));
        }
    }

    #[test]
    fn credentials_in_a_url_are_hidden() {
        for (url, shown) in [
            (
                "http://user:s3cret@127.0.0.1:9/x",
                "http://user:***@127.0.0.1:9/x",
            ),
            ("https://t0ken@example.com", "https://***@example.com/"),
            ("http://a:b:c@h/p?q=u:v@w", "http://a:***@h/p?q=u:v@w"),
            ("http://h/p?next=x@y", "http://h/p?next=x@y"),
            ("http://127.0.0.1:9/x", "http://127.0.0.1:9/x"),
            ("http://u:p@w@h/", "http://u:***@h/"),
            // A backslash ends the host, for the client as in browsers.
            (
                "http://t0ken@127.0.0.1:9\\x:y@z/h",
                "http://***@127.0.0.1:9/x:y@z/h",
            ),
            ("nota url :s3cret@", "nota url :s3cret@//***"),
        ] {
            assert_eq!(redacted_url(url), shown, "{url}");
        }
    }
}
