//! Helpers for end-to-end tests: start the real `cmdr` binary on a free port
//! with a temporary data directory, talk HTTP to it, stop it with SIGTERM.
//! Every failure message carries the command, the server's output, the
//! status and the body.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

/// Longest time the server may take to print its address or become ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest time the server may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

pub const BIN: &str = env!("CARGO_BIN_EXE_cmdr");

/// A running `cmdr serve`.
pub struct Server {
    child: Option<Child>,
    pub url: String,
    pub data_dir: PathBuf,
    stderr_path: PathBuf,
    command: String,
    /// The client `start` checked readiness with.
    pub client: reqwest::Client,
}

impl Server {
    /// Starts `cmdr serve --data-dir DIR --listen 127.0.0.1:0 ARGS...` and waits until /readyz says ready.
    pub async fn start(data_dir: &Path, args: &[&str]) -> Server {
        Self::start_with(data_dir, args, client()).await
    }

    /// Like [`Server::start`], checking readiness with `client` (one that
    /// trusts the server's certificate, for HTTPS).
    pub async fn start_with(data_dir: &Path, args: &[&str], client: reqwest::Client) -> Server {
        let mut server = Self::launch(data_dir, args, client);
        server.wait_for("/readyz").await;
        server
    }

    /// Starts the binary and reads the address it prints (listening, not
    /// necessarily ready).
    pub fn launch(data_dir: &Path, args: &[&str], client: reqwest::Client) -> Server {
        let stderr_path = data_dir.with_extension(format!("stderr-{}.log", std::process::id()));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr_path)
            .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(args);
        cmd.env_remove("CMDR_LISTEN")
            .env_remove("CMDR_DATA_DIR")
            // No free-space reserve unless a test asks for one (a flag wins
            // over this): the machine running the tests may have less than
            // the default's 256 MiB to spare.
            .env("CMDR_MIN_FREE_BYTES", "0")
            .env("RUST_LOG", "info");
        let command = format!("{cmd:?}");
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {command}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let mut server = Server {
            child: Some(child),
            url: String::new(),
            data_dir: data_dir.to_path_buf(),
            stderr_path,
            command,
            client,
        };
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(l) => l,
            Err(_) => panic!("{} printed no address\n{}", server.command, server.output()),
        };
        server.url = line
            .strip_prefix("cmdr listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}\n{}", server.output()))
            .to_string();
        server
    }

    /// The server's stderr so far.
    pub fn output(&self) -> String {
        format!(
            "--- {} stderr ---\n{}",
            self.command,
            std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
        )
    }

    async fn wait_for(&mut self, path: &str) {
        let client = self.client.clone();
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(r) = client.get(format!("{}{path}", self.url)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "server exited with {status} before ready\n{}",
                    self.output()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "server not ready in time\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "SIGTERM failed");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(STOP_TIMEOUT) {
            Ok(Ok(status)) => assert!(
                status.success(),
                "server exited with {status}\n{}",
                self.output()
            ),
            _ => panic!("server did not stop after SIGTERM\n{}", self.output()),
        }
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`) to the server.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = self.child.as_ref().unwrap().id();
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }

    /// Waits (for at most `timeout`) for the server to exit, and reaps it.
    pub fn wait_exit(mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(timeout) {
            Ok(Ok(status)) => status,
            _ => panic!("server did not exit in {timeout:?}\n{}", self.output()),
        }
    }

    /// Kills the server with SIGKILL (a crash) and reaps it.
    pub fn crash(mut self) {
        let mut child = self.child.take().unwrap();
        child
            .kill()
            .unwrap_or_else(|e| panic!("SIGKILL failed: {e}\n{}", self.output()));
        let _ = child.wait();
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A reply, read whole.
pub struct Reply {
    pub what: String,
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Reply {
    /// Asserts the status, with the request and body in the message.
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(
            self.status, status,
            "{} answered {}: {}",
            self.what, self.status, self.text
        );
        self
    }

    /// Asserts a problem document with this status and code.
    pub fn expect_problem(self, status: u16, code: &str) -> Self {
        let r = self.expect(status);
        let ct = r
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert_eq!(ct, "application/problem+json", "{}: {}", r.what, r.text);
        assert_eq!(r.body["code"], code, "{}: {}", r.what, r.text);
        assert_eq!(r.body["status"], status, "{}: {}", r.what, r.text);
        r
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// Sends a request and reads the reply.
pub async fn send(req: reqwest::RequestBuilder) -> Reply {
    let (client, built) = req.build_split();
    let built = built.unwrap();
    let what = format!("{} {}", built.method(), built.url());
    let res = client
        .execute(built)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e:?}"));
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        what,
        status,
        headers,
        text,
        body,
    }
}

/// A minimal Server-Sent Events reader.
pub struct Sse {
    stream: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: String,
    what: String,
}

/// One SSE message.
#[derive(Debug, Clone)]
pub struct SseMessage {
    pub event: String,
    pub id: String,
    pub data: Value,
}

impl Sse {
    pub async fn connect(url: &str, last_event_id: Option<&str>) -> Sse {
        Self::connect_with(&client(), url, last_event_id).await
    }

    /// Like [`Sse::connect`], with `client`.
    pub async fn connect_with(
        client: &reqwest::Client,
        url: &str,
        last_event_id: Option<&str>,
    ) -> Sse {
        let mut req = client.get(url).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let res = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(res.status(), 200, "GET {url}");
        Sse {
            stream: res.bytes_stream().boxed(),
            buf: String::new(),
            what: format!("SSE {url}"),
        }
    }

    /// The next message (skipping comments), waiting at most 20 s.
    pub async fn next(&mut self) -> SseMessage {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut msg = SseMessage {
                    event: String::new(),
                    id: String::new(),
                    data: Value::Null,
                };
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        msg.event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        msg.id = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a heartbeat comment
                }
                msg.data = serde_json::from_str(&data)
                    .unwrap_or_else(|e| panic!("{}: bad data {data:?}: {e}", self.what));
                return msg;
            }
            let chunk = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{}: no message within 20 s; buffered {:?}",
                        self.what, self.buf
                    )
                })
                .unwrap_or_else(|| panic!("{}: stream ended", self.what))
                .unwrap_or_else(|e| panic!("{}: {e}", self.what));
            self.buf
                .push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));
        }
    }
}

/// An HTTP client as the command line builds one (rustls; the system's CA
/// certificates).
pub fn client() -> reqwest::Client {
    cmdr_processor::tls::client_builder(None)
        .and_then(|b| b.build().map_err(|e| e.to_string()))
        .unwrap_or_else(|e| panic!("building the HTTP client: {e}"))
}

/// Runs the binary with `args` and returns (status, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (std::process::ExitStatus, String, String) {
    run_cli_env(args, &[])
}

/// Like [`run_cli`], with environment variables `env` set.
pub fn run_cli_env(
    args: &[&str],
    env: &[(&str, &str)],
) -> (std::process::ExitStatus, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("CMDR_URL")
        .env_remove("CMDR_TOKEN")
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cmdr {args:?}: {e}"));
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// PEM files of a test CA and of a certificate it signed for `localhost`
/// and `127.0.0.1`, written to `dir`.
pub struct TestPki {
    /// The CA certificate (what clients trust).
    pub ca: PathBuf,
    /// The server's certificate.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

impl TestPki {
    pub fn new(dir: &Path) -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let pki = TestPki {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&pki.ca, ca.pem()).unwrap();
        std::fs::write(&pki.cert, cert.pem()).unwrap();
        std::fs::write(&pki.key, key.serialize_pem()).unwrap();
        pki
    }

    /// A client that trusts the test CA.
    pub fn client(&self) -> reqwest::Client {
        let ca = cmdr_processor::tls::read_certificates(&self.ca).unwrap();
        let config = cmdr_processor::tls::client_config(&ca).unwrap();
        cmdr_processor::tls::client_builder(Some(&config))
            .unwrap()
            .build()
            .unwrap()
    }
}
