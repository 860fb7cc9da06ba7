#!/usr/bin/env python3
"""Black-box SIGKILL fault test of `cmdr serve` (stdlib only).

Promise under test: a command answered 202/201/409 is never lost across
SIGKILL; the index (commands, listings, streams, idempotency keys) is
consistent with the log after a crash; SSE resume with Last-Event-ID neither
skips nor repeats, nor does polling `GET /commands?from=POSITION`; killing
`cmdr reindex` or start-up recovery loses nothing; an online backup
(`cmdr backup`) taken under load, every third cycle, restores with every
command acknowledged before it, and no event of it lacks its command.

Usage:
  cargo build --release -p cmdr
  python3 soak/sigkill.py --bin target/release/cmdr \
      [--cycles 18] [--mode accounts|plain] [--seed N] [--keep]
Exit code 0 if no violation, 1 otherwise. Violations are printed with
prefix 'VIOLATION'.
"""
import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

NKEYS = 50
CLIENTS = 32
CONFIG = None

violations = []
stats = {"acks": 0, "checks": 0, "posts": 0, "unknown": 0, "idem_retries": 0,
         "sse_records": 0, "polled_records": 0, "reindex_kills": 0, "startup_kills": 0,
         "backups": 0, "backup_events_checked": 0}
lock = threading.Lock()


def violation(msg):
    with lock:
        violations.append(msg)
    print("VIOLATION:", msg, flush=True)


def check(cond, msg):
    with lock:
        stats["checks"] += 1
    if not cond:
        violation(msg)
    return cond


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Server:
    def __init__(self, binary, data, mode, logdir, n):
        self.port = free_port()
        args = [binary, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{self.port}"]
        if mode == "accounts":
            args += ["--example", "accounts"]
        if CONFIG:
            args += ["--config", CONFIG]
        self.errlog = open(os.path.join(logdir, f"server-{n}.log"), "wb")
        self.proc = subprocess.Popen(args, stdout=self.errlog, stderr=self.errlog)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_listening(self, timeout=60):
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited rc={self.proc.returncode}")
            try:
                st, _ = req(self.port, "GET", "/healthz", timeout=2)
                if st == 200:
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("server did not start")

    def wait_ready(self, timeout=120):
        t0 = time.time()
        while time.time() - t0 < timeout:
            try:
                st, _ = req(self.port, "GET", "/readyz", timeout=5)
                if st == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server not ready")

    def kill(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.errlog.close()


def req(port, method, path, body=None, headers=None, timeout=30, conn=None):
    own = conn is None
    if own:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        h = {"content-type": "application/json"} if body is not None else {}
        h.update(headers or {})
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        return r.status, data
    finally:
        if own:
            conn.close()


def get_json(port, path, timeout=30):
    for _ in range(200):
        st, data = req(port, "GET", path, timeout=timeout)
        if st == 503:
            time.sleep(0.1)
            continue
        return st, (json.loads(data) if data else None)
    return st, None


def metrics(port):
    st, data = req(port, "GET", "/metrics")
    out = {}
    for line in data.decode().splitlines():
        m = re.match(r'cmdr_(\w+)\{topic="([^"]+)",partition="(\d+)"\} (\d+)', line)
        if m:
            out[(m.group(1), m.group(2), int(m.group(3)))] = int(m.group(4))
    return out


def cmd_end(m):
    return sum(v for (name, topic, _), v in m.items()
               if name == "log_end_offset" and topic == "commands")


def wait_index_caught_up(port, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        m = metrics(port)
        lags = [v for (name, _, _), v in m.items() if name == "index_lag_records"]
        if lags and all(v == 0 for v in lags):
            return m
        time.sleep(0.1)
    violation(f"index lag did not reach 0 within {timeout}s: {metrics(port)}")
    return metrics(port)


# ---------------------------------------------------------------- state
class World:
    def __init__(self):
        self.seq = 0
        self.acked = {}        # id -> dict(n, key, idem, body)
        self.idem = {}         # idem key -> (id or None, body)
        self.acked_idem = []
        self.sent_n = {}       # n -> body (every POST sent, acked or not)
        self.sse_seen = []     # ordered command ids the SSE follower got
        self.sse_last = None   # last SSE id (position)
        self.sse_positions = []
        self.polled = []       # ordered command ids the poller got

    def next_n(self):
        with lock:
            self.seq += 1
            return self.seq


def command_id_of(status, data):
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    if status in (201, 202):
        return doc.get("id")
    if status == 409 and isinstance(doc.get("command"), dict):
        return doc["command"].get("id")
    return None


def retry_old_key(world, port, rng):
    """Retries an Idempotency-Key acked earlier (maybe before a crash): same id or 503."""
    with lock:
        if not world.acked_idem:
            return
        k = rng.choice(world.acked_idem)
        cid, body, path = world.idem[k]
    try:
        st, data = req(port, "POST", "/commands", body, {"Idempotency-Key": k}, timeout=10)
    except (OSError, http.client.HTTPException):
        return
    with lock:
        stats["idem_retries"] += 1
    if st == 503:
        return
    rid = command_id_of(st, data)
    check(rid == cid, f"[load] retry of acked Idempotency-Key {k} (acked as {cid}) "
          f"answered {st} with id {rid}: {data[:300]!r}")


def client_loop(world, port, stop, tid, mode, rng):
    conn = None
    while not stop.is_set():
        if rng.random() < 0.05:
            retry_old_key(world, port, rng)
            continue
        n = world.next_n()
        key = f"acc-{n % NKEYS}"
        amount = 1 + n % 7
        body = json.dumps({"action": "deposit", "data": {"n": n, "amount": amount}, "key": key})
        headers = {}
        path = "/commands"
        r = rng.random()
        idem = None
        if r < 0.25:
            idem = f"idem-{n}"
            headers["Idempotency-Key"] = idem
        if rng.random() < 0.2:
            path = "/commands?sync=true"
            headers["Prefer"] = "wait=1"
        with lock:
            world.sent_n[n] = body
            stats["posts"] += 1
            if idem:
                world.idem[idem] = (None, body, path)
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            st, data = req(port, "POST", path, body, headers, conn=conn)
        except (OSError, http.client.HTTPException):
            with lock:
                stats["unknown"] += 1
            try:
                conn.close()
            except Exception:
                pass
            conn = None
            time.sleep(0.005)
            continue
        if st in (201, 202, 409):
            cid = command_id_of(st, data)
            if not cid:
                violation(f"ack {st} without id: {data[:200]!r}")
                continue
            with lock:
                if cid in world.acked:
                    violation(f"two POSTs answered with the same id {cid}")
                world.acked[cid] = {"n": n, "key": key, "idem": idem, "body": body}
                stats["acks"] += 1
                if idem:
                    world.idem[idem] = (cid, body, path)
                    world.acked_idem.append(idem)
        elif st == 503:
            time.sleep(0.01)
        else:
            violation(f"unexpected status {st} for POST {path}: {data[:300]!r}")


# ---------------------------------------------------------------- readers
class Reader(threading.Thread):
    """Reads from whichever server is up (set_port), step after step, until
    stopped; a step that fails on a dying server is tried again."""

    def __init__(self, world):
        super().__init__(daemon=True)
        self.world = world
        self.port = None
        self.stop = threading.Event()

    def set_port(self, port):
        self.port = port

    def run(self):
        while not self.stop.is_set():
            port = self.port
            if port is None:
                time.sleep(0.05)
                continue
            try:
                self.step(port)
            except (OSError, http.client.HTTPException, ValueError):
                time.sleep(0.05)


class SSE(Reader):
    """Follows /commands/updates across server restarts with Last-Event-ID."""

    def __init__(self, world):
        super().__init__(world)
        self.connected = threading.Event()

    def step(self, port):
        self.follow(port)
        time.sleep(0.05)

    def follow(self, port):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        headers = {"accept": "text/event-stream"}
        path = "/commands/updates"
        if self.world.sse_last is None:
            path += "?from=start"
        else:
            headers["Last-Event-ID"] = self.world.sse_last
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        if r.status != 200:
            r.read()
            conn.close()
            time.sleep(0.1)
            return
        self.connected.set()
        data, ev_id = [], None
        while not self.stop.is_set():
            line = r.readline()
            if not line:
                break
            line = line.decode().rstrip("\r\n")
            if line.startswith("data:"):
                data.append(line[5:].lstrip(" ") if line[5:6] == " " else line[5:])
            elif line.startswith("id:"):
                ev_id = line[3:].strip()
            elif line == "":
                if data:
                    rec = json.loads("\n".join(data))
                    with lock:
                        self.world.sse_seen.append(rec["id"])
                        self.world.sse_positions.append(ev_id)
                        stats["sse_records"] += 1
                        if ev_id is not None:
                            self.world.sse_last = ev_id
                elif ev_id is not None:
                    with lock:
                        self.world.sse_last = ev_id
                data, ev_id = [], None
        conn.close()


class Poller(Reader):
    """Polls GET /commands?from=POSITION across server restarts."""

    def __init__(self, world):
        super().__init__(world)
        self.position = "start"

    def step(self, port):
        path = "/commands?" + urllib.parse.urlencode({"from": self.position, "limit": 1000})
        st, doc = get_json(port, path, timeout=10)
        if st != 200:
            # A position this server gave must stay valid across crashes.
            check(st != 400, f"poller: {path} -> {st} {doc!r:.200}")
            time.sleep(0.05)
            return
        with lock:
            self.world.polled += [it["id"] for it in doc["items"]]
            stats["polled_records"] += len(doc["items"])
        self.position = doc["position"]
        if doc["next"] is None:
            time.sleep(0.02)


def wait_poller_caught_up(world, port, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        end = cmd_end(metrics(port))
        with lock:
            n = len(world.polled)
        if n >= end:
            return
        time.sleep(0.1)
    violation(f"poller did not catch up: {len(world.polled)} < {end}")


def verify_polled(world, binary, url, label):
    with lock:
        polled = list(world.polled)
    end = cmd_end(metrics(int(url.rsplit(":", 1)[1])))
    tail = {r["id"] for r in tail_ids(binary, url, end)}
    check(len(polled) == len(set(polled)), f"[{label}] poller got duplicates: "
          f"{len(polled) - len(set(polled))}")
    pset = set(polled)
    check(pset <= tail, f"[{label}] poller got ids not in the log: {list(pset - tail)[:3]}")
    missing = tail - pset
    check(not missing, f"[{label}] poller missed {len(missing)} log records: {list(missing)[:3]}")


# ---------------------------------------------------------------- verification
def tail_ids(binary, url, count):
    if count == 0:
        return []
    p = subprocess.run([binary, "tail", "commands", "--from", "start", "--url", url,
                        "--limit", str(count)], capture_output=True, timeout=180)
    if p.returncode != 0:
        violation(f"cmdr tail rc={p.returncode}: {p.stderr[-500:]!r}")
    ids = []
    for line in p.stdout.decode().splitlines():
        if line.strip():
            ids.append(json.loads(line))
    return ids


def verify(world, srv, binary, mode, label):
    port = srv.port
    t0 = time.time()
    srv.wait_ready()
    m = wait_index_caught_up(port)
    log_end = cmd_end(m)
    # 1. every ack is found, with its content
    missing = []
    with lock:
        acked = dict(world.acked)
    for cid, a in acked.items():
        found = None
        for attempt in range(30):
            st, doc = get_json(port, f"/commands/{cid}")
            if st == 200:
                found = doc
                break
            time.sleep(0.1)
        if not check(found is not None, f"[{label}] acked command {cid} (n={a['n']}) not found: GET -> {st}"):
            missing.append(cid)
            continue
        check(found["data"].get("n") == a["n"] and found["key"] == a["key"],
              f"[{label}] command {cid} content differs: {found['data']} vs n={a['n']}")
    # 2. listing pagination
    listed = []
    path = "/commands?limit=1000&order=asc"
    pages = 0
    while path:
        st, doc = get_json(port, path)
        if not check(st == 200, f"[{label}] listing {path} -> {st}"):
            break
        listed += [it["id"] for it in doc["items"]]
        path = doc["next"]
        pages += 1
        if pages > 10000:
            break
    lset = set(listed)
    check(len(lset) == len(listed), f"[{label}] listing has {len(listed) - len(lset)} duplicates")
    check(listed == sorted(listed), f"[{label}] asc listing not in id order")
    lost = [c for c in acked if c not in lset]
    check(not lost, f"[{label}] {len(lost)} acked ids missing from listing, e.g. {lost[:3]}")
    # 3. the log tail
    tail = tail_ids(binary, srv.url, log_end)
    tids = [r["id"] for r in tail]
    tset = set(tids)
    check(len(tids) == log_end, f"[{label}] tail gave {len(tids)} records, log end {log_end}")
    check(len(tset) == len(tids), f"[{label}] tail has duplicate ids")
    notail = [c for c in acked if c not in tset]
    check(not notail, f"[{label}] {len(notail)} acked ids missing from log tail, e.g. {notail[:3]}")
    check(tset == lset, f"[{label}] index listing ({len(lset)}) != log ({len(tset)}); "
          f"only in log: {list(tset - lset)[:3]} only in index: {list(lset - tset)[:3]}")
    # n uniqueness in log: an idempotent retry must not append twice
    ns = {}
    for r in tail:
        n = r.get("data", {}).get("n")
        if n is not None:
            ns.setdefault(n, []).append(r["id"])
    dups = {n: v for n, v in ns.items() if len(v) > 1}
    check(not dups, f"[{label}] same request logged twice (n -> ids): {list(dups.items())[:3]}")
    # 4. SSE (checked at the end of run(); here only note position)
    # 5. idempotency retries
    before = cmd_end(metrics(port))
    with lock:
        idems = dict(world.idem)
    items = list(idems.items())
    random.shuffle(items)
    for k, (cid, body, path) in items[:400]:
        for attempt in range(100):
            st, data = req(port, "POST", "/commands", body, {"Idempotency-Key": k})
            if st != 503:
                break
            time.sleep(0.1)
        with lock:
            stats["idem_retries"] += 1
        rid = command_id_of(st, data)
        if cid is not None:
            check(st in (200, 201, 202, 409) and rid == cid,
                  f"[{label}] retry of acked Idempotency-Key {k}: {st} id {rid} != {cid}")
        else:
            # unacknowledged: whatever it is now, it must be stable
            check(rid is not None, f"[{label}] retry of unacked key {k}: {st} {data[:200]!r}")
            if rid:
                with lock:
                    world.idem[k] = (rid, body, path)
                    if rid not in world.acked:
                        n = json.loads(body)["data"]["n"]
                        world.acked[rid] = {"n": n, "key": json.loads(body)["key"], "idem": k, "body": body}
    after_first = cmd_end(metrics(port))
    # a second round of retries of the same keys must append nothing at all
    for k, (cid, body, path) in items[:400]:
        cid = world.idem[k][0]
        for attempt in range(100):
            st, data = req(port, "POST", "/commands", body, {"Idempotency-Key": k})
            if st != 503:
                break
            time.sleep(0.1)
        rid = command_id_of(st, data)
        check(rid == cid, f"[{label}] second retry of key {k}: {st} id {rid} != {cid}")
    after = cmd_end(metrics(port))
    nacked_new = sum(1 for k, (c, _, _) in items[:400] if idems[k][0] is None)
    check(after_first - before <= nacked_new,
          f"[{label}] idempotent retries appended {after_first - before} (> {nacked_new} unacked keys)")
    check(after == after_first, f"[{label}] second retries appended {after - after_first} commands")
    # 6. streams (accounts mode: processor outcome events)
    if mode == "accounts":
        verify_streams(world, port, label, tail)
    print(f"[{label}] verified: log={log_end} listed={len(lset)} acked={len(acked)} "
          f"idem_keys={len(idems)} in {time.time() - t0:.1f}s", flush=True)


def verify_streams(world, port, label, tail):
    # wait until every command in the log is settled (the example processor handles all)
    pending_deadline = time.time() + 90
    while time.time() < pending_deadline:
        st, doc = get_json(port, "/commands?status=pending&limit=10")
        if st == 200 and not doc["items"]:
            break
        time.sleep(0.3)
    else:
        violation(f"[{label}] commands still pending after 90s: {[i['id'] for i in doc['items']]}")
    wait_index_caught_up(port)
    by_key = {}
    for r in tail:
        by_key.setdefault(r.get("key"), []).append(r)
    for i in range(NKEYS):
        key = f"acc-{i}"
        events, after = [], None
        while True:
            path = f"/streams/{key}?limit=1000" + (f"&after={after}" if after is not None else "")
            st, doc = get_json(port, path)
            if not check(st == 200, f"[{label}] GET {path} -> {st}"):
                break
            events += doc["items"]
            if not doc.get("next"):
                break
            after = urllib.parse.parse_qs(urllib.parse.urlparse(doc["next"]).query)["after"][0]
        offs = [(e["position"]["partition"], e["position"]["offset"]) for e in events]
        check(offs == sorted(offs) and len(set(offs)) == len(offs),
              f"[{label}] stream {key} positions not strictly increasing")
        ids = [e["id"] for e in events]
        check(len(set(ids)) == len(ids), f"[{label}] stream {key} has duplicate event ids")
        parents = {}
        bal = None
        for e in events:
            if e.get("outcome"):
                parents.setdefault(e.get("parent"), []).append(e["id"])
            if e["action"] == "account-opened":
                bal = 0
            elif e["action"] == "deposited":
                if bal is not None:
                    check(e["data"]["balance"] == bal + e["data"]["amount"],
                          f"[{label}] stream {key} balance chain broken at {e['id']}: "
                          f"{bal} + {e['data']['amount']} != {e['data']['balance']}")
                bal = e["data"]["balance"]
        dup = {p: v for p, v in parents.items() if len(v) > 1}
        check(not dup, f"[{label}] stream {key}: commands with >1 outcome event: {list(dup.items())[:2]}")
        cmds = [r["id"] for r in by_key.get(key, [])]
        nooutcome = [c for c in cmds if c not in parents]
        check(not nooutcome, f"[{label}] stream {key}: {len(nooutcome)} commands without outcome event, e.g. {nooutcome[:2]}")
        # per-key processing order == log order of the commands
        order = [e.get("parent") for e in events if e.get("outcome") and e.get("parent") in set(cmds)]
        check(order == [c for c in cmds if c in parents],
              f"[{label}] stream {key}: outcomes not in command log order")
        with lock:
            stats["checks"] += 0


def verify_sse(world, binary, url, label):
    with lock:
        seen = list(world.sse_seen)
    st, _ = req(int(url.rsplit(":", 1)[1]), "GET", "/healthz")
    m = metrics(int(url.rsplit(":", 1)[1]))
    end = cmd_end(m)
    tail = [r["id"] for r in tail_ids(binary, url, end)]
    check(len(seen) == len(set(seen)), f"[{label}] SSE follower got duplicates: "
          f"{len(seen) - len(set(seen))}")
    # Without filters, each record advances exactly one partition by one,
    # across reconnects too (a resume neither skips nor repeats).
    with lock:
        positions = list(world.sse_positions)
    prev = None
    bad = 0
    for j, pos in enumerate(positions):
        cur = [int(x) for x in pos.split(".")]
        base = prev if prev is not None else [0] * len(cur)
        diff = [c - b for c, b in zip(cur, base)]
        if sorted(diff) != [0] * (len(cur) - 1) + [1]:
            bad += 1
            if bad <= 3:
                print(f"  SSE position jump at record #{j} ({seen[j]}): {prev} -> {pos}", flush=True)
        prev = cur
    check(bad == 0, f"[{label}] SSE positions skip or repeat {bad} times")
    sset, tset = set(seen), set(tail)
    check(sset <= tset, f"[{label}] SSE delivered ids not in the log: {list(sset - tset)[:3]}")
    missing = tset - sset
    check(not missing, f"[{label}] SSE missed {len(missing)} log records: {list(missing)[:3]}")


# ---------------------------------------------------------------- main
def open_accounts(port):
    for i in range(NKEYS):
        body = json.dumps({"action": "open-account", "data": {"owner": f"o{i}"}, "key": f"acc-{i}"})
        st, data = req(port, "POST", "/commands?sync=true", body, {"Idempotency-Key": f"open-{i}"})
        if st not in (201, 409):
            raise RuntimeError(f"open-account {i}: {st} {data[:200]!r}")


def wait_sse_caught_up(world, port, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        end = cmd_end(metrics(port))
        with lock:
            n = len(world.sse_seen)
        if n >= end:
            return
        time.sleep(0.1)
    violation(f"SSE follower did not catch up: {len(world.sse_seen)} < {end}")


def take_backup(world, binary, url, base, n):
    """`cmdr backup` of the running server; returns (archive, acks before it)."""
    with lock:
        acked_before = dict(world.acked)
    out = os.path.join(base, f"backup-{n}.tar")
    r = subprocess.run([binary, "backup", "--url", url, "--out", out],
                       capture_output=True, text=True, timeout=300)
    if not check(r.returncode == 0, f"[backup {n}] cmdr backup failed: {r.stderr.strip()}"):
        return None, acked_before
    stats["backups"] += 1
    return out, acked_before


def verify_backup(binary, mode, archive, acked_before, logdir, n):
    """Restores `archive` into a fresh directory, serves it and checks it."""
    label = f"backup {n}"
    d = tempfile.mkdtemp(prefix="cmdr-restore-")
    subprocess.run(["tar", "-xf", archive, "-C", d], check=True)
    srv = Server(binary, d, mode, logdir, f"restore-{n}")
    try:
        srv.wait_listening()
        srv.wait_ready()
        wait_index_caught_up(srv.port)
        for cid, a in acked_before.items():
            st, doc = get_json(srv.port, f"/commands/{cid}")
            if check(st == 200, f"[{label}] command {cid} (n={a['n']}) acknowledged before the backup is missing: GET -> {st}"):
                check(doc["data"].get("n") == a["n"],
                      f"[{label}] command {cid} content differs: {doc['data']} vs n={a['n']}")
        # Causes before effects: every event's command is in the copy.
        roots = set()
        path = "/events?limit=1000&order=asc"
        while path:
            st, page = get_json(srv.port, path)
            if not check(st == 200, f"[{label}] GET {path} -> {st}"):
                break
            for ev in page["items"]:
                if ev.get("root"):
                    roots.add(ev["root"])
                stats["backup_events_checked"] += 1
            nxt = page.get("next")
            path = nxt if nxt else None
        for root in roots:
            st, _ = get_json(srv.port, f"/commands/{root}")
            check(st == 200, f"[{label}] an event's command {root} is not in the backup: GET -> {st}")
        print(f"  {label}: {len(acked_before)} earlier acks and {len(roots)} events' commands found", flush=True)
    finally:
        srv.kill()
        shutil.rmtree(d, ignore_errors=True)


def run(args):
    rng = random.Random(args.seed)
    random.seed(args.seed)
    base = tempfile.mkdtemp(prefix="cmdr-fault-")
    data = os.path.join(base, "data")
    logdir = os.path.join(base, "logs")
    os.makedirs(logdir)
    print(f"data dir {data}, logs {logdir}, seed {args.seed}, mode {args.mode}", flush=True)
    world = World()
    global CONFIG
    if args.partitions > 1:
        CONFIG = os.path.join(base, "cmdr.toml")
        with open(CONFIG, "w") as f:
            f.write(f"commands_partitions = {args.partitions}\nevents_partitions = {args.partitions}\n")
    sse = SSE(world)
    sse.start()
    poller = Poller(world)
    poller.start()
    nsrv = 0
    srv = Server(args.bin, data, args.mode, logdir, nsrv)
    srv.wait_listening()
    if args.mode == "accounts":
        srv.wait_ready()
        open_accounts(srv.port)
    for cycle in range(args.cycles):
        sse.set_port(srv.port)
        poller.set_port(srv.port)
        stop = threading.Event()
        threads = [threading.Thread(target=client_loop,
                                    args=(world, srv.port, stop, t, args.mode, random.Random(rng.random())),
                                    daemon=True) for t in range(CLIENTS)]
        for t in threads:
            t.start()
        delay = rng.uniform(0.010, 2.0)
        backup = None
        if cycle % 3 == 0:
            # An online backup under load, then the kill.
            time.sleep(0.3)
            backup = take_backup(world, args.bin, srv.url, base, cycle)
        time.sleep(delay)
        srv.kill()
        stop.set()
        for t in threads:
            t.join()
        print(f"cycle {cycle}: killed after {delay * 1000:.0f} ms; acks so far {stats['acks']}, "
              f"posts {stats['posts']}, unknown {stats['unknown']}", flush=True)
        extra = cycle % 3
        if extra == 1:
            # SIGKILL during `cmdr reindex`, a few times at growing delays
            for d in sorted(rng.uniform(0.002, 0.25) for _ in range(3)):
                p = subprocess.Popen([args.bin, "reindex", "--data-dir", data],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(d)
                rc = p.poll()
                if rc is None:
                    p.kill()
                    stats["reindex_kills"] += 1
                p.wait()
                print(f"  reindex after {d * 1000:.0f} ms: {'killed' if rc is None else 'finished rc=%s' % rc}", flush=True)
        elif extra == 2:
            # SIGKILL during start-up recovery / catch-up
            for _ in range(2):
                nsrv += 1
                s2 = Server(args.bin, data, args.mode, logdir, nsrv)
                time.sleep(rng.uniform(0.0, 0.3))
                s2.kill()
                stats["startup_kills"] += 1
        nsrv += 1
        srv = Server(args.bin, data, args.mode, logdir, nsrv)
        srv.wait_listening()
        sse.set_port(srv.port)
        poller.set_port(srv.port)
        verify(world, srv, args.bin, args.mode, f"cycle {cycle}")
        if backup and backup[0]:
            verify_backup(args.bin, args.mode, backup[0], backup[1], logdir, cycle)
            os.remove(backup[0])
        if cycle < args.cycles - 1:
            # kill the verified server too (its index loses non-durable commits),
            # and load the next one before its index has caught up
            srv.kill()
            nsrv += 1
            srv = Server(args.bin, data, args.mode, logdir, nsrv)
            srv.wait_listening()
    # final: let the SSE follower catch up and compare
    wait_sse_caught_up(world, srv.port)
    verify_sse(world, args.bin, srv.url, "final")
    wait_poller_caught_up(world, srv.port)
    verify_polled(world, args.bin, srv.url, "final")
    sse.stop.set()
    poller.stop.set()
    srv.kill()
    print("stats:", json.dumps(stats), flush=True)
    print(f"{len(violations)} violations", flush=True)
    if not args.keep and not violations:
        shutil.rmtree(base)
    else:
        print(f"kept {base}", flush=True)
    return 1 if violations else 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/cmdr")
    ap.add_argument("--cycles", type=int, default=18)
    ap.add_argument("--mode", choices=["accounts", "plain"], default="accounts")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--keep", action="store_true")
    sys.exit(run(ap.parse_args()))
