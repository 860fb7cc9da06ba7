//! End-to-end: the real `cmdr` binary on a free port with a temporary data
//! directory, driven over HTTP, with no processor running. Outcomes with
//! processors (the accounts example, webhooks) are in `processing.rs`.

mod support;

use serde_json::json;
use support::{run_cli, run_cli_env, send, Server, Sse, TestPki};

fn client() -> reqwest::Client {
    support::client()
}

#[tokio::test]
async fn every_endpoint_and_error_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = Server::start(&data, &["--body-limit", "4096", "--sync-wait-ms", "300"]).await;
    let c = client();

    // Intake and reads.
    let r = send(
        c.post(s.at("/commands"))
            .json(&json!({"action": "open", "data": {"owner": "ada"}, "key": "acc-1"})),
    )
    .await
    .expect(202);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.header("location"), format!("/commands/{id}"));
    assert_eq!(r.body["status"], "pending");
    let r = send(c.get(s.at(&format!("/commands/{id}"))))
        .await
        .expect(200);
    assert_eq!(
        (r.body["status"].as_str(), r.body["key"].as_str()),
        (Some("pending"), Some("acc-1"))
    );
    let r = send(c.get(s.at("/commands?action=open&limit=10")))
        .await
        .expect(200);
    assert_eq!(r.body["items"][0]["id"], id.as_str());
    send(c.get(s.at("/events"))).await.expect(200);
    let r = send(c.get(s.at("/streams/acc-1"))).await.expect(200);
    assert_eq!(r.body["items"], json!([]));
    let r = send(
        c.get(s.at(&format!("/commands/{id}")))
            .header("accept", "text/html"),
    )
    .await
    .expect(200);
    assert!(r.text.contains("<html"), "{}", r.text);
    // One URL, two representations: caches must keep them apart.
    assert_eq!(r.header("vary"), "accept");
    // A page (the home page's command form too) may not be framed by
    // another site, and loads nothing.
    for page in [
        format!("/commands/{id}"),
        "/".to_string(),
        "/nowhere".to_string(),
    ] {
        let r = send(c.get(s.at(&page)).header("accept", "text/html")).await;
        assert_eq!(r.header("x-frame-options"), "DENY", "{page}");
        assert!(
            r.header("content-security-policy")
                .contains("frame-ancestors 'none'"),
            "{page}"
        );
        assert_eq!(r.header("x-content-type-options"), "nosniff", "{page}");
    }
    let r = send(c.get(s.at(&format!("/commands/{id}"))))
        .await
        .expect(200);
    assert_eq!(r.header("vary"), "accept");
    assert_eq!(r.header("x-frame-options"), "", "JSON needs no such header");

    // Sync with no processor: the wait runs out, 202 pending, nothing lost.
    let r = send(
        c.post(s.at("/commands"))
            .header("prefer", "wait=1")
            .json(&json!({"action": "slow", "data": {}})),
    )
    .await
    .expect(202);
    assert_eq!(r.body["status"], "pending");
    assert_eq!(r.header("preference-applied"), "wait=1");
    let slow = r.body["id"].as_str().unwrap().to_string();
    send(c.get(s.at(&format!("/commands/{slow}"))))
        .await
        .expect(200);

    // Idempotency.
    let idem = |n: i64| {
        c.post(s.at("/commands"))
            .header("idempotency-key", "k-1")
            .json(&json!({"action": "pay", "data": {"n": n}}))
    };
    let first = send(idem(1)).await.expect(202);
    let again = send(idem(1)).await.expect(202);
    assert_eq!(first.body["id"], again.body["id"]);
    send(idem(2))
        .await
        .expect_problem(422, "idempotency-key-reused");

    // Schemas.
    let schema = json!({"type": "object", "required": ["amount"], "properties": {"amount": {"type": "integer"}}});
    send(c.put(s.at("/schemas/deposit")).json(&schema))
        .await
        .expect(201);
    send(c.get(s.at("/schemas/deposit"))).await.expect(200);
    let r = send(c.get(s.at("/schemas"))).await.expect(200);
    assert_eq!(r.body["items"][0]["action"], "deposit");
    let r = send(
        c.post(s.at("/commands"))
            .json(&json!({"action": "deposit", "data": {"amount": "x"}})),
    )
    .await
    .expect_problem(422, "schema-violation");
    assert_eq!(r.body["errors"][0]["pointer"], "/data/amount");

    // Every error status.
    let before = send(c.get(s.at("/commands?limit=1000")))
        .await
        .expect(200)
        .body["items"]
        .as_array()
        .unwrap()
        .len();
    send(
        c.post(s.at("/commands"))
            .header("content-type", "application/json")
            .body("{oops"),
    )
    .await
    .expect_problem(400, "malformed-body");

    // An oversized request head: a problem, not hyper's bare answer.
    let mut big = c.get(s.at("/commands"));
    for i in 0..40 {
        big = big.header(format!("x-h{i}"), "v".repeat(2000));
    }
    send(big).await.expect_problem(431, "headers-too-large");
    send(c.get(s.at(&format!("/commands?key={}", "k".repeat(40_000)))))
        .await
        .expect_problem(414, "uri-too-long");
    send(
        c.post(s.at("/commands"))
            .json(&json!({"action": "", "data": 1})),
    )
    .await
    .expect_problem(422, "validation-failed");
    send(
        c.post(s.at("/commands"))
            .json(&json!({"action": "big", "data": {"x": "y".repeat(5000)}})),
    )
    .await
    .expect_problem(413, "payload-too-large");
    send(
        c.post(s.at("/commands"))
            .header("content-type", "text/csv")
            .body("a,b"),
    )
    .await
    .expect_problem(415, "unsupported-media-type");
    send(c.get(s.at("/commands/01900000-0000-7000-8000-000000000000")))
        .await
        .expect_problem(404, "not-found");
    send(c.get(s.at("/events/01900000-0000-7000-8000-000000000000")))
        .await
        .expect_problem(404, "not-found");
    send(c.get(s.at("/commands?limit=abc")))
        .await
        .expect_problem(400, "bad-request");
    send(c.get(s.at("/events?parent=nope")))
        .await
        .expect_problem(400, "bad-request");
    let after = send(c.get(s.at("/commands?limit=1000")))
        .await
        .expect(200)
        .body["items"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after, "no error appended anything");

    // Health and self-description.
    send(c.get(s.at("/healthz"))).await.expect(200);
    send(c.get(s.at("/readyz"))).await.expect(200);
    let r = send(c.get(s.at("/openapi.json"))).await.expect(200);
    assert_eq!(r.body["openapi"], "3.1.0");
    assert!(r.body["paths"]["/accounts"].is_null(), "no example here");
    send(c.get(s.at("/docs"))).await.expect(200);

    // The command line client.
    let (status, out, err) = run_cli(&[
        "send",
        "greet",
        "--data",
        r#"{"name":"ada"}"#,
        "--key",
        "g-1",
        "--url",
        &s.url,
    ]);
    assert!(status.success(), "cmdr send: {status}\n{out}\n{err}");
    let sent: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("cmdr send printed {out:?}: {e}"));
    let sent_id = sent["id"].as_str().unwrap();
    let (status, out, err) = run_cli(&["get", sent_id, "--url", &s.url]);
    assert!(
        status.success() && out.contains("\"greet\""),
        "cmdr get: {status}\n{out}\n{err}"
    );
    let (status, out, err) = run_cli(&[
        "tail", "commands", "--from", "start", "--limit", "2", "--url", &s.url,
    ]);
    assert!(
        status.success() && out.lines().count() == 2,
        "cmdr tail: {status}\n{out}\n{err}"
    );
    // A reader that goes away (`| head -1`) stops `tail` quietly (exit 0,
    // or SIGPIPE as for any Unix tool if it was writing; never a panic,
    // exit 101), and at once, with no new record to write.
    {
        use std::io::BufRead;
        use std::os::unix::process::ExitStatusExt;
        let mut tail = std::process::Command::new(support::BIN)
            .args(["tail", "commands", "--from", "start", "--url", &s.url])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufReader::new(tail.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(first.contains("\"id\""), "{first}");
        // The reader is dropped: the pipe is closed, and nothing new comes.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while tail.try_wait().unwrap().is_none() && std::time::Instant::now() < until {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        if tail.try_wait().unwrap().is_none() {
            let _ = tail.kill();
            panic!("`cmdr tail` went on for 15 s after its reader went away");
        }
        let out = tail.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("panicked") && (out.status.success() || out.status.signal() == Some(13)),
            "{:?}\n{err}",
            out.status
        );
    }
    // A typo is not a rejection (2): the command line's refusal is 64.
    let (status, _, err) = run_cli(&["send", "greet", "--sync", "--dta", "{}", "--url", &s.url]);
    assert_eq!(status.code(), Some(64), "{err}");
    assert!(err.contains("--dta"), "{err}");
    // An URL without a scheme gets a hint.
    let (status, _, err) = run_cli(&["get", sent_id, "--url", "127.0.0.1:3000"]);
    assert!(
        status.code() == Some(1) && err.contains("must start with http://"),
        "{err}"
    );
    // No processor handles `greet`: a sync send that runs out of waiting
    // says so with exit status 3 (the command is in, its outcome not yet).
    let (status, out, err) = run_cli(&["send", "greet", "--sync", "--url", &s.url]);
    assert_eq!(status.code(), Some(3), "cmdr send --sync: {out}\n{err}");
    assert!(
        out.contains("\"pending\"") && err.contains("pending"),
        "{out}\n{err}"
    );
    // --wait N: the wait asked for (Prefer: wait=N), and said.
    let (status, out, err) = run_cli(&["send", "greet", "--wait", "1", "--url", &s.url]);
    assert_eq!(status.code(), Some(3), "cmdr send --wait 1: {out}\n{err}");
    assert!(err.contains("wait up to 1 s"), "{err}");
    // An id that is no UUID names nothing (`..` or `updates` would name
    // other resources); an unknown one is a 404 from the server.
    for id in ["x?y=1/../z", "..", ".", "updates"] {
        let (status, out, err) = run_cli(&["get", id, "--url", &s.url]);
        assert!(
            status.code() == Some(1) && err.contains("ids are UUIDs") && out.is_empty(),
            "{id}: {out}\n{err}"
        );
    }
    let unknown = uuid::Uuid::now_v7().to_string();
    let (status, _, err) = run_cli(&["get", &unknown, "--url", &s.url]);
    assert!(
        status.code() == Some(1) && err.contains("no command or event has id"),
        "{err}"
    );
    // A URL that is not a cmdr server's is an error, not endless retries.
    let (status, _, err) = run_cli(&["tail", "events", "--url", &format!("{}/docs#", s.url)]);
    assert!(!status.success(), "{err}");

    // The log writer's counters: every command written since start was
    // written in some round and synced.
    let metrics = send(c.get(s.at("/metrics"))).await.expect(200).text;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in:\n{metrics}"))
    };
    let written = value("cmdr_log_records_written_total{topic=\"commands\"}");
    assert_eq!(
        written,
        value("cmdr_log_end_offset{topic=\"commands\",partition=\"0\"}")
    );
    let rounds = value("cmdr_log_rounds_total{topic=\"commands\"}");
    assert!(rounds >= 1.0 && rounds <= written, "{metrics}");
    assert!(value("cmdr_log_syncs_total{topic=\"commands\"}") >= rounds);
    assert!(value("cmdr_log_sync_seconds_total{topic=\"commands\"}") > 0.0);
    assert!(value("cmdr_log_written_bytes_total{topic=\"commands\"}") > written);
    s.stop();
}

#[tokio::test]
async fn sse_resumes_exactly_after_the_last_event_id() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &[]).await;
    let c = client();
    let mut sse = Sse::connect(&s.at("/commands/updates?from=start&action=tick"), None).await;
    for i in 0..3 {
        send(
            c.post(s.at("/commands"))
                .json(&json!({"action": "tick", "data": {"i": i}})),
        )
        .await
        .expect(202);
        send(
            c.post(s.at("/commands"))
                .json(&json!({"action": "other", "data": {}})),
        )
        .await
        .expect(202);
    }
    let a = sse.next().await;
    let b = sse.next().await;
    assert_eq!(
        (a.event.as_str(), a.data["data"]["i"].as_i64()),
        ("command", Some(0))
    );
    assert_eq!(b.data["data"]["i"], 1);
    drop(sse);
    for i in 3..5 {
        send(
            c.post(s.at("/commands"))
                .json(&json!({"action": "tick", "data": {"i": i}})),
        )
        .await
        .expect(202);
    }
    let mut sse = Sse::connect(&s.at("/commands/updates?action=tick"), Some(&b.id)).await;
    for want in 2..5 {
        let m = sse.next().await;
        assert_eq!(
            m.data["data"]["i"], want,
            "resumed from {}: got {m:?}",
            b.id
        );
    }
    drop(sse);
    s.stop();
}

#[tokio::test]
async fn restart_and_reindex_keep_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = Server::start(&data, &[]).await;
    let c = client();
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = send(
            c.post(s.at("/commands"))
                .json(&json!({"action": "keep", "data": {"i": i}, "key": "k"})),
        )
        .await
        .expect(202);
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    send(
        c.put(s.at("/schemas/keep"))
            .json(&json!({"type": "object", "required": ["i"]})),
    )
    .await
    .expect(201);
    // Nothing to reload (no config file, no HTTPS): a SIGHUP is logged, and
    // neither ends the server nor skips its drain and sync (`stop` checks
    // the exit status).
    s.signal(libc::SIGHUP);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    send(c.get(s.at("/healthz"))).await.expect(200);
    assert!(s.output().contains("nothing to reload"), "{}", s.output());
    s.stop();

    let s = Server::start(&data, &[]).await;
    for id in &ids {
        send(c.get(s.at(&format!("/commands/{id}"))))
            .await
            .expect(200);
    }
    send(
        c.post(s.at("/commands"))
            .json(&json!({"action": "keep", "data": {}})),
    )
    .await
    .expect_problem(422, "schema-violation");
    // A second process on the same data directory is refused before it touches the log.
    let (status, out, err) = run_cli(&["reindex", "--data-dir", data.to_str().unwrap()]);
    assert!(
        !status.success() && err.contains("is another cmdr using"),
        "reindex while serving: {status}\n{out}\n{err}"
    );
    send(c.get(s.at(&format!("/commands/{}", ids[0]))))
        .await
        .expect(200);
    s.stop();

    // A torn tail (as a crash mid-write leaves): reindex cuts it, and says so.
    let part = data.join("log/topics/commands/0");
    let segment = std::fs::read_dir(&part)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes.extend_from_slice(b"torn");
    std::fs::write(&segment, bytes).unwrap();
    let (status, out, err) = run_cli(&["reindex", "--data-dir", data.to_str().unwrap()]);
    assert!(status.success(), "cmdr reindex: {status}\n{out}\n{err}");
    assert!(out.contains("reindexed 5 commands"), "{out}");
    assert!(err.contains("truncated the log tail"), "{err}");
    // A mistyped data directory is an error, not an empty reindex.
    let typo = data.with_file_name("no-such-data-dir");
    let (status, _, err) = run_cli(&["reindex", "--data-dir", typo.to_str().unwrap()]);
    assert!(!status.success(), "reindex of nothing succeeded");
    assert!(err.contains("no log to reindex"), "{err}");
    assert!(!typo.exists(), "nothing was created");
    let s = Server::start(&data, &[]).await;
    let r = send(c.get(s.at("/commands?key=k&order=asc")))
        .await
        .expect(200);
    let got: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, ids);

    // A schema removed: its commands are no longer checked, across restarts.
    send(c.delete(s.at("/schemas/keep"))).await.expect(204);
    send(c.delete(s.at("/schemas/keep")))
        .await
        .expect_problem(404, "not-found");
    let gone = send(c.get(s.at("/schemas/keep")))
        .await
        .expect_problem(404, "not-found");
    assert!(gone.text.contains("removed (version 2)"), "{}", gone.text);
    let removal = send(c.get(s.at("/schemas/keep?version=2")))
        .await
        .expect(200);
    assert_eq!(removal.body["removed"], true, "{}", removal.text);
    assert_eq!(removal.body["versions"], json!([1, 2]), "{}", removal.text);
    let listed = send(c.get(s.at("/schemas"))).await.expect(200);
    assert_eq!(listed.body["items"], json!([]), "{}", listed.text);
    s.stop();
    let s = Server::start(&data, &[]).await;
    send(
        c.post(s.at("/commands"))
            .json(&json!({"action": "keep", "data": {}})),
    )
    .await
    .expect(202);
    s.stop();
}

#[tokio::test]
async fn log_lines_can_be_json_for_collectors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = Server::start(&data, &["--log-format", "json"]).await;
    send(client().get(s.at("/healthz"))).await.expect(200);
    let output = s.output();
    s.stop();
    let lines: Vec<&str> = output
        .lines()
        .skip(1) // the "--- command stderr ---" header of `output`
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(!lines.is_empty(), "no log lines\n{output}");
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\n{output}"));
        assert!(
            v["level"].is_string() && v["message"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
    }
    // Settings refused: said as a JSON line too, with exit status 1.
    let d = data.to_str().unwrap();
    let (status, out, err) = run_cli(&[
        "serve",
        "--data-dir",
        d,
        "--log-format",
        "json",
        "--listen",
        "nohost",
    ]);
    assert_eq!(status.code(), Some(1), "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(err.trim())
        .unwrap_or_else(|e| panic!("not one JSON line ({e}): {err:?}"));
    assert_eq!(v["level"], "ERROR", "{err}");
    assert!(
        v["error"].as_str().unwrap().contains("listen address"),
        "{err}"
    );
}

#[test]
fn bad_configuration_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d = data.to_str().unwrap();
    let (status, _, err) = run_cli(&["serve", "--data-dir", d, "--listen", "localhost"]);
    assert!(!status.success() && err.contains("listen address"), "{err}");
    let (status, _, err) = run_cli(&["serve", "--data-dir", d, "--log-format", "xml"]);
    assert!(!status.success() && err.contains("--log-format"), "{err}");
    let (status, _, err) = run_cli(&["serve", "--data-dir", d, "--header-read-timeout-s", "0"]);
    assert!(
        !status.success() && err.contains("header_read_timeout_s"),
        "{err}"
    );
    let (status, _, err) = run_cli(&["serve", "--data-dir", d, "--send-timeout-s", "0"]);
    assert!(!status.success() && err.contains("send_timeout_s"), "{err}");
    // A bad value from the environment says where it came from; with JSON
    // log lines asked for, the refusal is one.
    let (status, _, err) = run_cli_env(
        &["serve", "--data-dir", d],
        &[("CMDR_MIN_FREE_BYTES", "lots")],
    );
    assert_eq!(status.code(), Some(64), "{err}");
    assert!(
        err.contains("'lots'") && err.contains("environment variable CMDR_MIN_FREE_BYTES"),
        "{err}"
    );
    let (status, _, err) = run_cli_env(
        &["serve", "--data-dir", d, "--min-free-bytes", "lots"],
        &[("CMDR_LOG_FORMAT", "json")],
    );
    assert_eq!(status.code(), Some(64), "{err}");
    let line: serde_json::Value =
        serde_json::from_str(err.trim()).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(line["message"], "the command line is refused", "{err}");
    assert!(
        !line["error"].as_str().unwrap().contains("environment"),
        "{err}"
    );
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "listen = 3\n").unwrap();
    let (status, _, err) = run_cli(&["serve", "--data-dir", d, "--config", cfg.to_str().unwrap()]);
    assert!(!status.success() && err.contains("is not valid"), "{err}");
    std::fs::write(
        &cfg,
        "[[tokens]]\nprincipal = \"x\"\nroles = [\"read\"]\nsha256 = \"abc\"\n",
    )
    .unwrap();
    let (status, _, err) = run_cli(&["serve", "--data-dir", d, "--config", cfg.to_str().unwrap()]);
    assert!(
        !status.success() && err.contains("tokens entry 1") && err.contains("sha256"),
        "{err}"
    );
    // A taken port: refused before the data directory is made.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = taken.local_addr().unwrap().to_string();
    let fresh = dir.path().join("fresh");
    let f = fresh.to_str().unwrap();
    let (status, _, err) = run_cli(&["serve", "--data-dir", f, "--listen", &at]);
    assert!(!status.success() && err.contains("cannot listen"), "{err}");
    assert!(!fresh.exists(), "a failed start left {f} behind");
    std::fs::write(&cfg, "commands_partitions = 0\n").unwrap();
    let (status, _, err) = run_cli(&["serve", "--data-dir", d, "--config", cfg.to_str().unwrap()]);
    assert!(
        !status.success() && err.contains("commands_partitions"),
        "{err}"
    );
}

#[tokio::test]
async fn under_the_free_space_reserve_writes_get_507_and_reads_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let c = client();
    // A first run with room takes a command and a schema.
    let s = Server::start(&data, &["--min-free-bytes", "1024"]).await;
    let first = send(
        c.post(s.at("/commands"))
            .json(&json!({"action": "open", "data": {}, "key": "k"})),
    )
    .await
    .expect(202);
    let id = first.body["id"].as_str().unwrap().to_string();
    let schema = json!({"type": "object"});
    send(c.put(s.at("/schemas/open")).json(&schema))
        .await
        .expect(201);
    let once = json!({"action": "open", "data": {"n": 1}, "key": "k"});
    let first_try = send(
        c.post(s.at("/commands"))
            .header("idempotency-key", "once-1")
            .json(&once),
    )
    .await
    .expect(202);
    let hook = json!({"url": "http://127.0.0.1:9/", "actions": ["never-sent"]});
    send(c.put(s.at("/processors/p")).json(&hook))
        .await
        .expect(201);
    let metrics = send(c.get(s.at("/metrics"))).await.expect(200).text;
    assert!(metrics.contains("cmdr_data_dir_free_bytes "), "{metrics}");
    assert!(
        metrics.contains("cmdr_data_dir_min_free_bytes 1024"),
        "{metrics}"
    );
    s.stop();

    // More free space asked for than any disk has: started, but short.
    // Ready all the same (reads go on), saying the disk is short.
    let s = Server::start(&data, &["--min-free-bytes", "18446744073709551615"]).await;
    let ready = send(c.get(s.at("/readyz"))).await.expect(200);
    assert_eq!(ready.body["checks"]["disk_space"], false, "{}", ready.text);
    assert_eq!(ready.body["checks"]["log"], true, "{}", ready.text);
    send(c.get(s.at("/healthz"))).await.expect(200);
    assert!(s.output().contains("under the reserve"), "{}", s.output());

    let refused = send(
        c.post(s.at("/commands"))
            .header("idempotency-key", "short-1")
            .json(&json!({"action": "open", "data": {}, "key": "k"})),
    )
    .await
    .expect_problem(507, "insufficient-storage");
    assert_eq!(refused.header("retry-after"), "30");
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("min_free_bytes"),
        "{}",
        refused.text
    );
    // Still 422 for a command that is not valid: the reserve is checked last.
    send(
        c.post(s.at("/commands"))
            .json(&json!({"action": "", "data": {}})),
    )
    .await
    .expect_problem(422, "validation-failed");
    send(c.put(s.at("/schemas/open")).json(&json!({"type": "array"})))
        .await
        .expect_problem(507, "insufficient-storage");
    // The same schema again writes nothing, so it is answered; an invalid
    // one is told so before the disk is.
    send(c.put(s.at("/schemas/open")).json(&schema))
        .await
        .expect(200);
    send(c.put(s.at("/schemas/open")).json(&json!({"type": 5})))
        .await
        .expect_problem(422, "invalid-schema");
    send(c.delete(s.at("/schemas/open")))
        .await
        .expect_problem(507, "insufficient-storage");
    send(c.put(s.at("/processors/q")).json(&json!({
        "url": "http://127.0.0.1:9/", "actions": ["other"]
    })))
    .await
    .expect_problem(507, "insufficient-storage");
    send(c.put(s.at("/processors/q")).json(&hook))
        .await
        .expect_problem(422, "invalid-registration");
    send(c.put(s.at("/processors/p")).json(&hook))
        .await
        .expect(200);
    send(c.delete(s.at("/processors/p")))
        .await
        .expect_problem(507, "insufficient-storage");
    // A retry of a command taken before is answered: it writes nothing.
    let retried = send(
        c.post(s.at("/commands"))
            .header("idempotency-key", "once-1")
            .json(&once),
    )
    .await
    .expect(202);
    assert_eq!(retried.body["id"], first_try.body["id"], "{}", retried.text);
    // Reads go on, and nothing was appended.
    send(c.get(s.at(&format!("/commands/{id}"))))
        .await
        .expect(200);
    let listed = send(c.get(s.at("/commands"))).await.expect(200);
    assert_eq!(
        listed.body["items"].as_array().unwrap().len(),
        2,
        "{}",
        listed.text
    );
    let metrics = send(c.get(s.at("/metrics"))).await.expect(200).text;
    assert!(
        metrics.contains("cmdr_command_answers_total{status=\"507\"} 1"),
        "{metrics}"
    );
    s.stop();

    // With no reserve the idempotency key was never bound: it takes the command.
    let s = Server::start(&data, &["--min-free-bytes", "0"]).await;
    send(
        c.post(s.at("/commands"))
            .header("idempotency-key", "short-1")
            .json(&json!({"action": "open", "data": {}, "key": "k"})),
    )
    .await
    .expect(202);
    s.stop();
}

#[tokio::test]
async fn https_serves_the_api_and_the_command_line_trusts_a_given_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let (cert, key, ca) = (
        pki.cert.to_str().unwrap(),
        pki.key.to_str().unwrap(),
        pki.ca.to_str().unwrap(),
    );
    let s = Server::start_with(
        &dir.path().join("data"),
        &["--tls-cert", cert, "--tls-key", key],
        pki.client(),
    )
    .await;
    assert!(s.url.starts_with("https://127.0.0.1:"), "{}", s.url);
    // A client that connects and never starts its handshake holds up nobody.
    let addr = s.url.trim_start_matches("https://").to_string();
    let _silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let c = pki.client();
    let sent = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        send(
            c.post(s.at("/commands"))
                .json(&json!({"action": "pay", "data": {"amount": 5}, "key": "inv-1"})),
        ),
    )
    .await
    .expect("served while another client stalls its handshake")
    .expect(202);
    let id = sent.body["id"].as_str().unwrap().to_string();
    send(c.get(s.at(&format!("/commands/{id}"))))
        .await
        .expect(200);
    let mut sse = Sse::connect_with(&c, &s.at("/commands/updates?from=start"), None).await;
    assert_eq!(sse.next().await.data["id"], id.as_str());
    // ALPN: HTTP/2 for a client that offers it, HTTP/1.1 for one that does
    // not (cmdr's own client does not).
    let version = |c: reqwest::Client| {
        let url = s.at("/healthz");
        async move { c.get(url).send().await.unwrap().version() }
    };
    assert_eq!(version(c.clone()).await, reqwest::Version::HTTP_11);
    let trusted = cmdr_processor::tls::read_certificates(&pki.ca).unwrap();
    let mut offers_h2 = (*cmdr_processor::tls::client_config(&trusted).unwrap()).clone();
    offers_h2.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let h2 = reqwest::Client::builder()
        .tls_backend_preconfigured(offers_h2)
        .build()
        .unwrap();
    assert_eq!(version(h2).await, reqwest::Version::HTTP_2);

    // Plain HTTP to the HTTPS port gets nowhere; a client that does not
    // trust the CA refuses the certificate.
    let plain = s.url.replacen("https://", "http://", 1);
    assert!(support::client()
        .get(format!("{plain}/healthz"))
        .send()
        .await
        .is_err());
    let (status, _, err) = run_cli(&["get", &id, "--url", &s.url]);
    assert!(
        !status.success()
            && err.contains("the server's certificate was refused (invalid peer certificate")
            && err.contains("hint: the server's certificate is not trusted: pass --ca-cert"),
        "{err}"
    );
    // Plain HTTP to the HTTPS server: the error says what to try.
    let plain = s.url.replacen("https://", "http://", 1);
    let (status, _, err) = run_cli(&["get", &id, "--url", &plain]);
    assert!(
        !status.success() && err.contains("hint: the server may speak HTTPS"),
        "{err}"
    );
    let (status, out, err) = run_cli(&["get", &id, "--url", &s.url, "--ca-cert", ca]);
    assert!(status.success() && out.contains(&id), "{err}");
    let (status, out, err) = run_cli(&[
        "send",
        "pay",
        "--data",
        "{\"amount\": 1}",
        "--url",
        &s.url,
        "--ca-cert",
        ca,
    ]);
    assert!(status.success() && out.contains("pending"), "{err}");

    // A renewed certificate (here from another CA) is taken on SIGHUP by
    // new connections; a broken one is refused and the current one stays.
    let renewed = TestPki::new(&dir.path().join("renewed"));
    std::fs::copy(&renewed.cert, &pki.cert).unwrap();
    std::fs::copy(&renewed.key, &pki.key).unwrap();
    s.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while renewed.client().get(s.at("/healthz")).send().await.is_err() {
        assert!(std::time::Instant::now() < deadline, "{}", s.output());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(pki.client().get(s.at("/healthz")).send().await.is_err());
    std::fs::write(&pki.cert, "not a certificate").unwrap();
    s.signal(libc::SIGHUP);
    while !s.output().contains("certificate not reloaded") {
        assert!(std::time::Instant::now() < deadline, "{}", s.output());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    send(renewed.client().get(s.at("/healthz")))
        .await
        .expect(200);
    s.stop();
    std::fs::copy(&renewed.cert, &pki.cert).unwrap();

    // Both files or neither; unreadable or mismatched files are named.
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let (status, _, err) = run_cli(&["serve", "--data-dir", d, "--tls-cert", cert]);
    assert!(!status.success() && err.contains("tls_key"), "{err}");
    let missing = dir.path().join("missing.pem");
    let m = missing.to_str().unwrap();
    let (status, _, err) = run_cli(&["serve", "--data-dir", d, "--tls-cert", m, "--tls-key", key]);
    assert!(!status.success() && err.contains("missing.pem"), "{err}");
    let other = TestPki::new(&dir.path().join("other"));
    let (status, _, err) = run_cli(&[
        "serve",
        "--data-dir",
        d,
        "--tls-cert",
        cert,
        "--tls-key",
        other.key.to_str().unwrap(),
    ]);
    assert!(!status.success() && err.contains("does not fit"), "{err}");
    let (status, _, err) = run_cli(&[
        "serve",
        "--data-dir",
        d,
        "--tls-cert",
        key,
        "--tls-key",
        key,
    ]);
    assert!(
        !status.success() && err.contains("no PEM certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn cors_answers_preflights_for_configured_origins_only() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, entry) = new_token("spa", &["read", "write"]);
    let cfg = dir.path().join("cmdr.toml");
    std::fs::write(&cfg, &entry).unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--cors-origin",
            "https://app.example,http://localhost:5173",
        ],
    )
    .await;
    let c = client();
    let preflight = |origin: &str| {
        c.request(reqwest::Method::OPTIONS, s.at("/commands"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,idempotency-key",
            )
    };
    // A preflight carries no token: answered before authentication.
    let r = send(preflight("https://app.example")).await.expect(200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        "https://app.example"
    );
    let allowed = r.header("access-control-allow-headers").to_lowercase();
    assert!(
        allowed.contains("authorization")
            && allowed.contains("idempotency-key")
            && allowed.contains("traceparent"),
        "{allowed}"
    );
    assert!(r.header("access-control-allow-methods").contains("POST"));
    let r = send(preflight("https://evil.example")).await;
    assert!(
        r.headers.get("access-control-allow-origin").is_none(),
        "{:?}",
        r.headers
    );

    let r = send(
        c.post(s.at("/commands"))
            .header("origin", "http://localhost:5173")
            .bearer_auth(&writer)
            .json(&json!({"action": "pay", "data": {}})),
    )
    .await
    .expect(202);
    assert_eq!(
        r.header("access-control-allow-origin"),
        "http://localhost:5173"
    );
    assert!(r
        .header("access-control-expose-headers")
        .to_lowercase()
        .contains("location"));
    // Without the token the request itself is still refused.
    send(
        c.post(s.at("/commands"))
            .header("origin", "https://app.example")
            .json(&json!({"action": "pay", "data": {}})),
    )
    .await
    .expect_problem(401, "unauthorized");
    s.stop();

    let data = dir.path().join("data");
    let (status, _, err) = run_cli(&[
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--cors-origin",
        "app.example",
    ]);
    assert!(!status.success() && err.contains("cors origin"), "{err}");
}

/// `cmdr token new` for `principal` with `roles`: the token and its entry.
fn new_token(principal: &str, roles: &[&str]) -> (String, String) {
    let mut args = vec!["token", "new", "--principal", principal];
    for r in roles {
        args.extend(["--role", r]);
    }
    let (status, out, err) = run_cli(&args);
    assert!(status.success(), "{err}");
    let (first, entry) = out.split_once('\n').unwrap();
    let token = first.strip_prefix("token: ").unwrap().to_string();
    assert!(!entry.contains(&token), "the entry must not hold the token");
    (token, entry.to_string())
}

#[tokio::test]
async fn bearer_tokens_guard_the_api_and_name_the_principal() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, w_entry) = new_token("billing", &["write"]);
    let (reader, r_entry) = new_token("dashboard", &["read"]);
    let (admin, a_entry) = new_token("ops", &["admin"]);
    let cfg = dir.path().join("cmdr.toml");
    std::fs::write(
        &cfg,
        format!("access_log = true\n{w_entry}\n{r_entry}\n{a_entry}"),
    )
    .unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    )
    .await;
    let c = client();
    let command = json!({"action": "pay", "data": {"amount": 5}, "key": "inv-1"});

    let r = send(c.post(s.at("/commands")).json(&command))
        .await
        .expect_problem(401, "unauthorized");
    assert_eq!(r.header("www-authenticate"), "Bearer realm=\"cmdr\"");
    send(
        c.post(s.at("/commands"))
            .bearer_auth("cmdr_wrong")
            .json(&command),
    )
    .await
    .expect_problem(401, "unauthorized");
    send(
        c.post(s.at("/commands"))
            .bearer_auth(&reader)
            .json(&command),
    )
    .await
    .expect_problem(403, "forbidden");
    let sent = send(
        c.post(s.at("/commands"))
            .bearer_auth(&writer)
            .json(&command),
    )
    .await
    .expect(202);
    assert_eq!(sent.body["meta"]["principal"], "billing");
    let id = sent.body["id"].as_str().unwrap().to_string();

    // Reads need the read role; health checks and the API description none.
    send(c.get(s.at(&format!("/commands/{id}"))).bearer_auth(&writer))
        .await
        .expect_problem(403, "forbidden");
    let read = send(c.get(s.at(&format!("/commands/{id}"))).bearer_auth(&reader))
        .await
        .expect(200);
    assert_eq!(read.body["meta"]["principal"], "billing");
    send(c.get(s.at("/commands"))).await.expect(401);
    // Live updates (EventSource, WebSocket) also take ?access_token=, as
    // browsers cannot set the header there; other resources do not.
    let mut sse = Sse::connect(
        &s.at(&format!(
            "/commands/updates?from=start&access_token={reader}"
        )),
        None,
    )
    .await;
    assert_eq!(sse.next().await.data["id"], id.as_str());
    send(c.get(s.at("/commands/updates?access_token=cmdr_wrong")))
        .await
        .expect_problem(401, "unauthorized");
    send(c.get(s.at(&format!("/commands?access_token={reader}"))))
        .await
        .expect_problem(401, "unauthorized");
    send(c.get(s.at("/healthz"))).await.expect(200);
    send(c.get(s.at("/openapi.json"))).await.expect(200);

    // Schemas are administration; admin implies every role.
    let schema = json!({"type": "object"});
    send(
        c.put(s.at("/schemas/pay"))
            .bearer_auth(&writer)
            .json(&schema),
    )
    .await
    .expect_problem(403, "forbidden");
    let put = send(
        c.put(s.at("/schemas/pay"))
            .bearer_auth(&admin)
            .json(&schema),
    )
    .await;
    assert!(put.status == 200 || put.status == 201, "{}", put.text);
    send(c.get(s.at("/schemas/pay")).bearer_auth(&admin))
        .await
        .expect(200);

    // The command line sends the token it is given.
    let (status, _, err) = run_cli(&["send", "pay", "--data", "{}", "--url", &s.url]);
    assert!(!status.success() && err.contains("401"), "{err}");
    let (status, out, err) = run_cli(&[
        "send", "pay", "--data", "{}", "--url", &s.url, "--token", &writer,
    ]);
    assert!(status.success(), "{err}");
    assert!(out.contains("\"principal\": \"billing\""), "{out}");

    // The access log names each request's principal, and hides tokens.
    let log = s.output();
    assert!(
        log.contains("cmdr::access") && log.contains("principal=\"billing\""),
        "{log}"
    );
    assert!(
        log.contains("status=401") && log.contains("access_token=***"),
        "{log}"
    );
    for token in [&writer, &reader, &admin] {
        assert!(
            !log.contains(token.as_str()),
            "a token reached the log: {log}"
        );
    }
    s.stop();
}

/// Polls `GET /commands` with `token` until it answers `status` (20 s at most).
async fn until_token_gets(s: &Server, token: &str, status: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = client()
            .get(s.at("/commands"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        if r.status().as_u16() == status {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "token still gets {} instead of {status}\n{}",
            r.status(),
            s.output()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sighup_reloads_the_tokens_and_keeps_them_when_the_file_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let (old, old_entry) = new_token("old", &["read"]);
    let (new, new_entry) = new_token("new", &["read"]);
    let cfg = dir.path().join("cmdr.toml");
    std::fs::write(&cfg, &old_entry).unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    )
    .await;
    until_token_gets(&s, &old, 200).await;
    send(client().get(s.at("/commands")).bearer_auth(&new))
        .await
        .expect_problem(401, "unauthorized");

    std::fs::write(&cfg, &new_entry).unwrap();
    s.signal(libc::SIGHUP);
    until_token_gets(&s, &new, 200).await;
    until_token_gets(&s, &old, 401).await;

    // A broken file, one without tokens, or valid tokens beside a setting
    // the next start would refuse, changes nothing.
    let bad_setting = format!("commands_partitions = 0\n{old_entry}");
    for (i, text) in ["[[tokens]]\nprincipal = \"x\"\n", "", &bad_setting]
        .into_iter()
        .enumerate()
    {
        std::fs::write(&cfg, text).unwrap();
        s.signal(libc::SIGHUP);
        // One signal at a time: signals sent together may arrive as one.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while s.output().matches("tokens not reloaded").count() <= i {
            assert!(std::time::Instant::now() < deadline, "{}", s.output());
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    until_token_gets(&s, &new, 200).await;
    until_token_gets(&s, &old, 401).await;
    s.stop();
}

#[tokio::test]
async fn a_config_file_sets_partitions_and_positions_span_them() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cmdr.toml");
    std::fs::write(
        &cfg,
        "commands_partitions = 3\nevents_partitions = 2\nbody_limit = 65536\n",
    )
    .unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    )
    .await;
    let c = client();
    for i in 0..12 {
        send(
            c.post(s.at("/commands"))
                .json(&json!({"action": "spread", "data": {"i": i}, "key": format!("key-{i}")})),
        )
        .await
        .expect(202);
    }
    let mut sse = Sse::connect(&s.at("/commands/updates?from=start"), None).await;
    let mut seen = Vec::new();
    let mut last = String::new();
    for _ in 0..6 {
        let m = sse.next().await;
        assert_eq!(
            m.id.split('.').count(),
            3,
            "one offset per partition: {}",
            m.id
        );
        seen.push(m.data["data"]["i"].as_i64().unwrap());
        last = m.id;
    }
    drop(sse);
    let mut sse = Sse::connect(&s.at("/commands/updates"), Some(&last)).await;
    for _ in 0..6 {
        seen.push(sse.next().await.data["data"]["i"].as_i64().unwrap());
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..12).collect::<Vec<_>>(),
        "every command exactly once across a resume"
    );
    drop(sse);
    s.stop();
    // Served again without the settings (a restored backup, say): the
    // topics keep their partitions, with no warning about a setting that
    // was not given; one asked for that differs is warned about.
    let s = Server::start(&dir.path().join("data"), &[]).await;
    let res = c.get(s.at("/commands?from=end")).send().await.unwrap();
    let page: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        page["position"].as_str().unwrap().split('.').count(),
        3,
        "{page}"
    );
    assert!(
        !s.output().contains("applies to a new data directory only"),
        "{}",
        s.output()
    );
    // A position of the wrong shape is told as such, past-the-end or not,
    // and named as the `from` parameter by listings and live streams alike.
    for path in [
        "/commands?from=7",
        "/commands?from=1",
        "/commands/updates?from=7",
    ] {
        let r = send(c.get(s.at(path)))
            .await
            .expect_problem(400, "bad-request");
        assert_eq!(
            r.body["errors"][0]["parameter"], "from",
            "{path}: {}",
            r.text
        );
        assert!(
            r.text
                .contains("has 1 offset but topic commands has 3 partitions"),
            "{path}: {}",
            r.text
        );
    }
    s.stop();
    std::fs::write(&cfg, "commands_partitions = 2\n").unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    )
    .await;
    assert!(
        s.output()
            .contains("commands_partitions applies to a new data directory only"),
        "{}",
        s.output()
    );
    s.stop();
}

#[tokio::test]
async fn idempotency_keys_lapse_after_the_configured_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = Server::start(&data, &["--idempotency-ttl-s", "2"]).await;
    let c = client();
    let post = |n: i64| {
        c.post(s.at("/commands"))
            .header("idempotency-key", "k-ttl")
            .json(&json!({"action": "pay", "data": {"n": n}}))
    };
    let first = send(post(1)).await.expect(202);
    send(post(2))
        .await
        .expect_problem(422, "idempotency-key-reused");
    // Two seconds later the key is free: another request is a new command,
    // and retries of it return that one.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let second = send(post(2)).await.expect(202);
    assert_ne!(first.body["id"], second.body["id"]);
    let retry = send(post(2)).await.expect(202);
    assert_eq!(retry.body["id"], second.body["id"]);
    send(post(1))
        .await
        .expect_problem(422, "idempotency-key-reused");

    // Bad settings are refused at start-up with a clear message.
    let out = std::process::Command::new(support::BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("other"))
        .args(["--idempotency-ttl-s", "99999999999"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("idempotency_ttl_s must be at most"), "{err}");
}

/// `--shutdown-delay-ms`: at SIGTERM `/readyz` turns 503 at once while
/// commands are still taken, and the server stops only after the delay.
#[tokio::test]
async fn readiness_fails_first_and_serving_goes_on_for_the_shutdown_delay() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = Server::start(&data, &["--shutdown-delay-ms", "3000"]).await;
    let asked = std::time::Instant::now();
    s.signal(libc::SIGTERM);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    let ready = loop {
        let r = send(s.client.get(s.at("/readyz"))).await;
        if r.status == 503 {
            break r;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", s.output());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(
        ready.body["checks"]["shutting_down"], true,
        "{}",
        ready.text
    );
    // Still serving: a command is taken, and found.
    let sent = send(
        s.client
            .post(s.at("/commands"))
            .json(&json!({"action": "late", "data": {}})),
    )
    .await
    .expect(202);
    // Each answer tells a keep-alive client to take its next request
    // elsewhere (a new connection), instead of racing the drain.
    assert_eq!(sent.header("connection"), "close");
    let id = sent.body["id"].as_str().unwrap().to_string();
    send(s.client.get(s.at(&format!("/commands/{id}"))))
        .await
        .expect(200);
    let status = s.wait_exit(std::time::Duration::from_secs(20));
    assert!(status.success(), "{status}");
    let took = asked.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(2500),
        "stopped after {took:?}"
    );
    // The command taken during the delay is kept.
    let s = Server::start(&data, &[]).await;
    send(s.client.get(s.at(&format!("/commands/{id}"))))
        .await
        .expect(200);
    s.stop();
}

/// A server without tokens takes no form post and no WebSocket from a page
/// of another site (neither is preflighted, so CORS cannot stop them); its
/// own pages and non-browser clients are served.
#[tokio::test]
async fn other_sites_cannot_post_forms_or_open_websockets() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &[]).await;
    let host = s.url.trim_start_matches("http://").to_string();
    let form = |origin: Option<&str>| {
        let mut r = s
            .client
            .post(s.at("/commands"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("action=ping&data=%7B%7D");
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r
    };
    send(form(Some("https://evil.example")))
        .await
        .expect_problem(403, "forbidden");
    send(form(Some(&format!("http://{host}"))))
        .await
        .expect(202);
    send(form(None)).await.expect(202);
    let upgrade = |origin: &str| {
        s.client
            .get(s.at("/ws"))
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("origin", origin.to_string())
    };
    send(upgrade("https://evil.example"))
        .await
        .expect_problem(403, "forbidden");
    send(upgrade(&format!("http://{host}"))).await.expect(101);
    s.stop();
}

/// A client that sends a whole body far over the limit, without waiting
/// for `100 Continue`, reads the 413 rather than a broken connection: the
/// server reads and discards what the client goes on sending.
#[tokio::test]
async fn a_body_far_over_the_limit_gets_its_413_not_a_broken_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &["--body-limit", "4096"]).await;
    let c = client();
    let big = vec![b'x'; 48 << 20];
    for declared in [true, false] {
        let body = if declared {
            reqwest::Body::from(big.clone())
        } else {
            // Chunked: the server learns the size only by reading.
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                big.chunks(1 << 20).map(|c| Ok(c.to_vec())).collect();
            reqwest::Body::wrap_stream(futures::stream::iter(chunks))
        };
        send(
            c.post(s.at("/commands"))
                .header("content-type", "application/json")
                .body(body),
        )
        .await
        .expect_problem(413, "payload-too-large");
    }
    // The server is still fine.
    send(
        c.post(s.at("/commands"))
            .json(&json!({"action": "a", "data": {}})),
    )
    .await
    .expect(202);
}

/// With every connection place taken, health checks are still answered and
/// other requests get a quick 503; a freed place serves again.
#[tokio::test]
async fn past_max_connections_health_checks_answer_and_the_rest_gets_503() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &["--max-connections", "2"]).await;
    let addr = s.url.trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // Accepted in order: give the server a moment to take both places.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // A fresh client for each request, so that none reuses a connection.
    let fresh = || {
        cmdr_processor::tls::client_builder(None)
            .unwrap()
            .pool_max_idle_per_host(0)
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .unwrap()
    };
    for path in ["/healthz", "/readyz"] {
        let res = fresh().get(s.at(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
    // A probe speaking HTTP/2 (h2c here; h2 by ALPN over TLS) too.
    let h2 = cmdr_processor::tls::client_builder(None)
        .unwrap()
        .http2_prior_knowledge()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap();
    let res = h2.get(s.at("/healthz")).send().await.unwrap();
    assert_eq!(
        (res.version(), res.status().as_u16()),
        (reqwest::Version::HTTP_2, 200)
    );
    drop(h2);
    let res = send(
        fresh()
            .post(s.at("/commands"))
            .json(&json!({"action": "a", "data": {}})),
    )
    .await;
    res.expect_problem(503, "unavailable");
    drop(held);
    let mut status = 0;
    for _ in 0..50 {
        let res = fresh()
            .post(s.at("/commands"))
            .json(&json!({"action": "a", "data": {}}))
            .send()
            .await
            .unwrap();
        status = res.status().as_u16();
        if status == 202 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 202, "{}", s.output());
    // The 503 appended nothing: one command in all. (The connection of
    // the post may still hold its place for a moment.)
    let mut page = serde_json::Value::Null;
    for _ in 0..50 {
        let res = fresh()
            .get(s.at("/commands?from=start"))
            .send()
            .await
            .unwrap();
        if res.status() == 200 {
            page = res.json().await.unwrap();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
}

/// HTTP/2 in plain text with prior knowledge (h2c, as proxies speak to
/// their upstreams): commands, reads and a live stream on the real binary.
#[tokio::test]
async fn http2_with_prior_knowledge_serves_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &[]).await;
    let c = cmdr_processor::tls::client_builder(None)
        .unwrap()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let res = c
        .post(s.at("/commands?sync=true"))
        .header("prefer", "wait=1")
        .json(&json!({"action": "pay", "data": {"amount": 5}, "key": "inv-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    // No processor answers: the wait ends pending.
    assert_eq!(res.status(), 202);
    let id = res.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    send(c.get(s.at(&format!("/commands/{id}"))))
        .await
        .expect(200);
    let mut sse = Sse::connect_with(&c, &s.at("/commands/updates?from=start"), None).await;
    assert_eq!(sse.next().await.data["id"], id.as_str());
    // The HTML rendering and the document too.
    send(c.get(s.at("/openapi.json"))).await.expect(200);
    s.stop();
}

/// `cmdr backup` while clients keep sending: the archive restores into a
/// data directory whose server (index rebuilt from the log) has every
/// command acknowledged before the backup began, ends where its manifest
/// says, and takes commands again. A partial or refused
/// download leaves no file under the name asked for.
#[tokio::test]
async fn an_online_backup_restores_every_command_acknowledged_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cmdr.toml");
    std::fs::write(&cfg, "commands_partitions = 3\n").unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    )
    .await;
    let post = |i: u32| {
        let req = s
            .client
            .post(s.at("/commands"))
            .json(&json!({"action": "pay", "data": {"i": i}, "key": format!("acc-{}", i % 7)}));
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 202);
            r.json::<serde_json::Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let mut before = Vec::new();
    for i in 0..300 {
        before.push(post(i).await);
    }
    // Clients go on while the backup is taken.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let (client, url) = (s.client.clone(), s.at("/commands"));
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = client
                    .post(&url)
                    .json(&json!({"action": "pay", "data": {"late": i}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                i += 1;
            }
            i
        })
    };
    let out = dir.path().join("backup.tar");
    let (url, out_arg) = (s.url.clone(), out.display().to_string());
    let (status, stdout, err) =
        tokio::task::spawn_blocking(move || run_cli(&["backup", "--url", &url, "--out", &out_arg]))
            .await
            .unwrap();
    assert!(status.success(), "{err}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let late = writer.await.unwrap();
    assert!(late > 0, "commands were sent during the backup");
    let manifest: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(!dir.path().join("backup.tar.part").exists());

    // Refused: an existing file.
    let out_arg = out.display().to_string();
    let (status, _, err) = run_cli(&["backup", "--url", &s.url, "--out", &out_arg]);
    assert!(!status.success() && err.contains("exists"), "{err}");
    // Refused: a directory that is not there, said so.
    let nowhere = dir.path().join("no-such-dir").join("b.tar");
    let (status, _, err) = run_cli(&[
        "backup",
        "--url",
        &s.url,
        "--out",
        &nowhere.display().to_string(),
    ]);
    assert!(
        status.code() == Some(1) && err.contains("its directory does not exist"),
        "{err}"
    );
    s.stop();

    let restored = dir.path().join("restored");
    std::fs::create_dir_all(&restored).unwrap();
    tar::Archive::new(std::fs::File::open(&out).unwrap())
        .unpack(&restored)
        .unwrap();
    let r = Server::start(&restored, &[]).await;
    for id in &before {
        send(r.client.get(r.at(&format!("/commands/{id}"))))
            .await
            .expect(200);
    }
    let metrics = send(r.client.get(r.at("/metrics"))).await.expect(200);
    let topics = manifest["topics"].as_array().unwrap();
    for topic in topics
        .iter()
        .filter(|t| t["name"] == "commands" || t["name"] == "events")
    {
        for p in topic["partitions"].as_array().unwrap() {
            let line = format!(
                "cmdr_log_end_offset{{topic=\"{}\",partition=\"{}\"}} ",
                topic["name"].as_str().unwrap(),
                p["partition"]
            );
            let end: u64 = metrics
                .text
                .lines()
                .find_map(|l| l.strip_prefix(&line)?.parse().ok())
                .unwrap_or_else(|| panic!("{line} in {}", metrics.text));
            // Before any command is sent to the restored server.
            assert_eq!(end, p["end_offset"].as_u64().unwrap(), "{line}{end} {p}");
        }
    }
    send(
        r.client
            .post(r.at("/commands"))
            .json(&json!({"action": "pay", "data": {"after": true}})),
    )
    .await
    .expect(202);
    r.stop();
}

/// A self-signed certificate marked as a CA (what `openssl req -x509`
/// makes by default) is refused by the command line even when given with
/// `--ca-cert`; the error says why and how to make one that works.
#[tokio::test]
async fn a_self_signed_ca_certificate_as_the_servers_gets_a_hint_that_says_so() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let (cert_arg, key_arg) = (
        cert_path.to_str().unwrap().to_string(),
        key_path.to_str().unwrap().to_string(),
    );
    // Listening is enough: the handshake is what fails.
    let s = Server::launch(
        &dir.path().join("data"),
        &["--tls-cert", &cert_arg, "--tls-key", &key_arg],
        support::client(),
    );
    let (status, _, err) = run_cli(&[
        "get",
        "0192a000-0000-7000-8000-000000000000",
        "--url",
        &s.url,
        "--ca-cert",
        &cert_arg,
    ]);
    assert!(
        !status.success()
            && err.contains("CaUsedAsEndEntity")
            && err.contains("hint: the server's certificate is marked as a CA")
            && err.contains("CA:FALSE"),
        "{err}"
    );
    s.stop();
}
