//! SIGHUP: `cmdr serve` rereads what can change without a restart, the
//! bearer tokens of its configuration file and its HTTPS certificate and
//! key (a renewed certificate), and swaps them in at once. What fails to
//! validate is not taken: the current tokens or certificate stay, and the
//! log says why. Other settings of the file, and turning authentication or
//! HTTPS on or off, take a restart.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{ServeArgs, Settings, TlsFiles};

/// What a SIGHUP reloads.
struct Reloadable {
    /// The flags the server started with: a reloaded file is checked with them.
    args: ServeArgs,
    config_file: Option<PathBuf>,
    tokens: Option<Arc<cmdr_gateway::TokenTable>>,
    tls: Option<(TlsFiles, Arc<cmdr_gateway::tls::ServerTls>)>,
}

/// Starts reloading on SIGHUP. The handler is in place when this returns
/// (a SIGHUP that came earlier would have ended the process), even when
/// there is nothing to reload: a SIGHUP then only says so in the log, rather
/// than end the process (its default action) without draining or syncing.
pub fn on_sighup(args: &ServeArgs, settings: &Settings) {
    let what = Reloadable {
        args: args.clone(),
        config_file: settings.config_file.clone(),
        tokens: settings.gateway.tokens.clone(),
        tls: settings.tls_files.clone().zip(settings.gateway.tls.clone()),
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(hangups) => {
                tokio::spawn(reload_on(hangups, what));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP: nothing will be reloaded")
            }
        }
    }
}

#[cfg(unix)]
async fn reload_on(mut hangups: tokio::signal::unix::Signal, what: Reloadable) {
    let what = Arc::new(what);
    while hangups.recv().await.is_some() {
        if what.config_file.is_none() && what.tls.is_none() {
            tracing::info!("SIGHUP: nothing to reload (no --config file, no HTTPS)");
            continue;
        }
        // Files, PEM parsing and maybe a host name lookup: off the runtime.
        let reload = Arc::clone(&what);
        if let Err(e) = tokio::task::spawn_blocking(move || reload.now()).await {
            tracing::error!(error = %e, "the reload failed; nothing changed");
        }
    }
}

impl Reloadable {
    /// Rereads and swaps in what validates.
    fn now(&self) {
        if let Some(path) = &self.config_file {
            reload_tokens(path, &self.args, self.tokens.as_ref());
        }
        if let Some((files, tls)) = &self.tls {
            match files.load() {
                Ok(config) => {
                    tls.replace(config);
                    tracing::info!(cert = %files.cert.display(), "certificate reloaded");
                }
                Err(e) => tracing::error!("certificate not reloaded, the current one stays: {e:#}"),
            }
        }
    }
}

/// Rereads the tokens of the configuration file at `path` (that of `args`)
/// into `table`.
fn reload_tokens(
    path: &std::path::Path,
    args: &ServeArgs,
    table: Option<&Arc<cmdr_gateway::TokenTable>>,
) {
    let file = path.display();
    match (crate::config::reread_tokens(args), table) {
        (Ok(Some(tokens)), Some(table)) => {
            let count = tokens.len();
            table.replace(tokens);
            tracing::info!(tokens = count, %file, "tokens reloaded");
        }
        (Ok(None), Some(_)) => tracing::error!(
            %file,
            "tokens not reloaded: the file lists none (restart to serve without authentication)"
        ),
        (Ok(Some(_)), None) => tracing::error!(
            %file,
            "tokens not loaded: this server runs without authentication (restart to turn it on)"
        ),
        (Ok(None), None) => {}
        (Err(e), _) => tracing::error!(%file, "tokens not reloaded, the current ones stay: {e:#}"),
    }
}
