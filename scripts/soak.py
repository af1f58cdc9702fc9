#!/usr/bin/env python3
"""Soak: a real `safegrid serve` under a steady mixed load for a fixed time, resident memory
sampled every minute.

Usage: python3 scripts/soak.py [--minutes 30] [--residents 20000] [--bin target/release/safegrid]
                               [--data-dir DIR]

It builds nothing: build the release binary first (`cargo build --release -p safegrid`). It
generates the demo street into a temporary directory, serves it on loopback, and then, at a
steady rate, looks up masked profiles (20/s), searches (5/s) and publishes small batches of
updates and new residents (one batch of 50 records every 2 s), each stream with its own
token (the per-principal rate limit stays on). Every minute it prints the server's resident
memory (VmRSS) and the counts so far; at the end a Markdown table for BENCHMARKS.md and the
error count. Exit status 1 if any request failed (anything but 2xx, or a 404 for a lookup of
a record the demo deliberately made bad).

--data-dir DIR serves a data directory `safegrid demo --residents N --no-serve` already filled
(for 1,000,000 residents, whose demo alone takes minutes): it is used as it is and kept (the
soak's own records stay in it); --residents must say how many residents it was made with.

Only loopback addresses are used; the load stops by itself.
"""

import argparse
import http.client
import json
import os
import random
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time


def free_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_mib(pid, field="VmRSS"):
    """The server's resident memory (or its peak, field="VmHWM") in MiB, -1 if unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return -1.0
    return -1.0


def id_number(n):
    # Born 1900-1909: no demo resident has such an ID number, so an update never claims a
    # real person's ID (which the broker would rightly hold back as identity_conflict).
    first17 = f"110105190{n % 10}{1 + n % 12:02d}{1 + n % 28:02d}{n % 1000:03d}"
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    total = sum(int(d) * w for d, w in zip(first17, weights))
    return first17 + "10X98765432"[total % 11]


class Client:
    """One keep-alive HTTPS connection, reopened when the server closes it."""

    def __init__(self, port, ca):
        self.port = port
        self.context = ssl.create_default_context(cafile=ca)
        self.conn = None

    def request(self, method, path, token, body=None, headers=None):
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection(
                    "localhost", self.port, context=self.context, timeout=30
                )
            h = {"Authorization": f"Bearer {token}"}
            h.update(headers or {})
            try:
                self.conn.request(method, path, body=body, headers=h)
                response = self.conn.getresponse()
                data = response.read()
                return response.status, data
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 1:
                    return 0, b""
        return 0, b""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--residents", type=int, default=20000)
    parser.add_argument("--bin", default="target/release/safegrid")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="safegrid-soak-")
    if args.data_dir:
        data = os.path.abspath(args.data_dir)
    else:
        data = os.path.join(work, "data")
        subprocess.run(
            [args.bin, "demo", "--residents", str(args.residents), "--data-dir", data,
             "--listen", "127.0.0.1:0", "--no-serve"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    port = free_port()
    config = os.path.join(work, "soak.toml")
    with open(config, "w") as f:
        f.write('metrics_listen = "off"\n')
        # The demo street's own place words, as `safegrid demo` serves with them: without
        # them the index (built with them) would be rebuilt at start.
        dictionary = os.path.join(data, "dev", "user-dictionary.txt")
        if os.path.exists(dictionary):
            f.write(f'user_dictionary = "{dictionary}"\n')
    server = subprocess.Popen(
        [args.bin, "serve", "--dev", "--data-dir", data, "--listen", f"127.0.0.1:{port}",
         "--config", config],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "serve.err"), "w"),
    )
    ca = os.path.join(data, "dev", "tls-cert.pem")

    def token(sub, role, extra):
        out = subprocess.run(
            [args.bin, "token", "--data-dir", data, "--sub", sub, "--role", role, "--ttl", "12h"]
            + extra,
            check=True, capture_output=True, text=True,
        )
        return out.stdout.strip()

    try:
        context = ssl.create_default_context(cafile=ca)
        serving = time.monotonic()
        # A broker on a 1,000,000-resident directory may rebuild its search index first.
        for _ in range(2400):
            try:
                c = http.client.HTTPSConnection("localhost", port, context=context, timeout=5)
                c.request("GET", "/readyz")
                if c.getresponse().status == 200:
                    break
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.5)
        print(f"ready after {time.monotonic() - serving:.1f} s; RSS {rss_mib(server.pid):.1f} MiB, "
              f"peak so far {rss_mib(server.pid, 'VmHWM'):.1f} MiB", flush=True)
        reader = token("soak-reader", "street_officer", ["--jurisdiction", "110105001"])
        searcher = token("soak-search", "street_officer", ["--jurisdiction", "110105001"])
        publisher = token("soak-pub", "dept_publisher", ["--jurisdiction", "110105001", "--dept", "wangge"])

        # Unified ids to look up: the gongan records the demo published (with a token of its
        # own, so this burst does not spend the steady readers' rate).
        collector = token("soak-collect", "street_officer", ["--jurisdiction", "110105001"])
        lookup = Client(port, ca)
        ids = []
        for i in range(1, min(args.residents, 500) + 1):
            time.sleep(0.025)
            status, body = lookup.request(
                "GET", f"/v1/residents/by-source/gongan/GA-{i:08d}", collector,
                headers={"X-Purpose": "routine_visit"},
            )
            if status == 200:
                ids.append(json.loads(body)["id"])
        if not ids:
            print("no demo residents found", file=sys.stderr)
            return 1

        stop = threading.Event()
        counts = {"lookup": 0, "search": 0, "ingest": 0, "errors": 0}
        lock = threading.Lock()
        errors = []

        def paced(rate, work):
            interval = 1.0 / rate
            next_at = time.monotonic()
            while not stop.is_set():
                work()
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    stop.wait(delay)

        def count(kind, ok, what):
            with lock:
                counts[kind] += 1
                if not ok:
                    counts["errors"] += 1
                    if len(errors) < 20:
                        errors.append(what)
                        print(f"error: {what}", file=sys.stderr, flush=True)

        lookups = Client(port, ca)

        def do_lookup():
            status, _ = lookups.request(
                "GET", f"/v1/residents/{random.choice(ids)}", reader,
                headers={"X-Purpose": "routine_visit"},
            )
            count("lookup", status == 200, f"lookup {status}")

        searches = Client(port, ca)
        words = ["zhang", "wang", "li", "3号楼", "liu", "chen", "zh", "王", "张", "8"]

        def do_search():
            q = random.choice(words)
            status, _ = searches.request(
                "GET", "/v1/residents?q=" + urllib_quote(q), searcher,
                headers={"X-Purpose": "routine_visit"},
            )
            count("search", status == 200, f"search {status}")

        ingests = Client(port, ca)
        serial = [0]

        def do_ingest():
            lines = []
            for _ in range(50):
                serial[0] += 1
                n = serial[0]
                lines.append(json.dumps({
                    "kind": "resident", "source_id": f"WG-SOAK-{n % 5000}",
                    "version": n, "id_number": id_number(n % 5000), "name": "测试居民",
                    "phone": f"139{n % 100000000:08d}",
                    "grid": "110105001001001",
                }, ensure_ascii=False))
            status, body = ingests.request(
                "POST", "/v1/ingest/wangge", publisher,
                body="\n".join(lines).encode(), headers={"Content-Type": "application/x-ndjson"},
            )
            rejected = json.loads(body or b"{}").get("rejected") if status == 200 else None
            codes = sorted({r.get("code") for r in rejected or []})
            count("ingest", status == 200 and not rejected, f"ingest {status} {codes}")

        threads = [
            threading.Thread(target=paced, args=(20, do_lookup), daemon=True),
            threading.Thread(target=paced, args=(5, do_search), daemon=True),
            threading.Thread(target=paced, args=(0.5, do_ingest), daemon=True),
        ]
        for t in threads:
            t.start()
        rows = []
        started = time.monotonic()
        minutes = int(args.minutes)
        for minute in range(0, minutes + 1):
            if minute > 0:
                target = started + minute * 60
                while time.monotonic() < target and server.poll() is None:
                    time.sleep(1)
            with lock:
                snapshot = dict(counts)
            rss = rss_mib(server.pid)
            rows.append((minute, rss, snapshot))
            print(f"minute {minute:2d}: RSS {rss:7.1f} MiB  lookups {snapshot['lookup']}  "
                  f"searches {snapshot['search']}  batches {snapshot['ingest']}  "
                  f"errors {snapshot['errors']}", flush=True)
            if server.poll() is not None:
                print("the server exited", file=sys.stderr)
                break
        stop.set()
        for t in threads:
            t.join(timeout=30)
        print()
        print("| minute | RSS MiB | lookups | searches | ingest batches | errors |")
        print("|---:|---:|---:|---:|---:|---:|")
        for minute, rss, c in rows:
            print(f"| {minute} | {rss:.1f} | {c['lookup']} | {c['search']} | {c['ingest']} | {c['errors']} |")
        print(f"\npeak RSS of the server (VmHWM, start-up included): {rss_mib(server.pid, 'VmHWM'):.1f} MiB")
        print(f"errors: {counts['errors']} {errors}")
        return 1 if counts["errors"] or server.poll() is not None else 0
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        subprocess.run(["rm", "-rf", work], check=False)  # not --data-dir: it is outside


def urllib_quote(text):
    from urllib.parse import quote

    return quote(text)


if __name__ == "__main__":
    sys.exit(main())
