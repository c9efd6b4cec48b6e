"""`segments upload` of a 1M-row list on DuckDB and PostgreSQL (issue 14): time and
peak memory. A script, not a test: it measures and reports, it asserts no timing.

    .venv/bin/python bench/upload_bench.py [--rows 1000000] [--out bench/RESULTS-uploads.md]

It writes a catalog with ``default_country: IN``, one user, two upload specs (phones,
emails) and two CSV lists of ``--rows`` rows each (phones in the four formats sales
teams paste, 1 in 1,000 rows repeated; emails with stray spaces and capitals), then
runs ``segments upload`` as a subprocess for each list and engine (the PostgreSQL
server a throwaway cluster on loopback, when its binaries are on the machine), timed
from start to exit, its peak RSS read from ``wait4``.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEGMENTS = ROOT / ".venv" / "bin" / "segments"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
CATALOG = """\
default_country: IN
users:
  table: bench.users
  key: user_id
  attributes:
    email: {type: string, pii: true}
    phone: {type: string, pii: true}
events:
  table: bench.events
  user_key: user_id
  name: event_name
  timestamp: occurred_at
"""


def write_inputs(folder: Path, rows: int) -> tuple[Path, dict[str, Path]]:
    specs = folder / "specs"
    specs.mkdir()
    (specs / "_catalog.yml").write_text(CATALOG)
    (specs / "callers.yml").write_text("name: callers\nupload: {match_on: phone}\n")
    (specs / "mailing.yml").write_text("name: mailing\nupload: {match_on: email}\n")
    (folder / "users.csv").write_text("user_id,email,phone\nu1,a@example.com,+91 90000 00001\n")
    (folder / "events.csv").write_text("user_id,event_name,occurred_at\nu1,x,2026-01-01 00:00:00\n")
    rng = random.Random(1)
    lists = {"callers": folder / "phones.csv", "mailing": folder / "emails.csv"}
    with lists["callers"].open("w") as phones, lists["mailing"].open("w") as emails:
        phones.write("phone,note\n")
        emails.write("email,note\n")
        for i in range(rows):
            n = str(9_000_000_000 + (rng.randrange(rows) if i % 1000 == 0 else i))
            phones.write((f"+91 {n[:5]} {n[5:]}", f"0{n}", n, f"0091-{n}")[i % 4] + ",x\n")
            emails.write((f" User.{i}@Example.com ", f"user.{i}@example.com")[i % 2] + ",x\n")
    return specs, lists


def timed(command: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS in MB (from ``wait4``) and stdout of ``command``."""
    started = time.monotonic()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - started
    out = process.stdout.read().decode() if process.stdout else ""
    err = process.stderr.read().decode() if process.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{err}")
    return seconds, usage.ru_maxrss // 1024, out


def start_postgres(folder: Path) -> tuple[dict[str, str], list[str]]:
    data = folder / "pg"
    as_server = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([*as_server, str(PG_BIN / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres"], check=True, capture_output=True)
    pg_ctl = [*as_server, str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log")]
    subprocess.run([*pg_ctl, "-o", f"-h 127.0.0.1 -p {port} -k {folder} -c fsync=off", "-w", "start"], check=True, capture_output=True)
    return {"PGHOST": "127.0.0.1", "PGPORT": str(port), "PGUSER": "postgres", "PGDATABASE": "postgres"}, pg_ctl


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS-uploads.md")
    args = parser.parse_args()
    results: list[tuple[str, str, float, int, str]] = []
    with tempfile.TemporaryDirectory(prefix="segments-upload-bench-") as tmp:
        folder = Path(tmp)
        folder.chmod(0o755)
        specs, lists = write_inputs(folder, args.rows)
        env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
        targets = [("duckdb", ["--warehouse", str(folder / "w.duckdb")])]
        pg_ctl: list[str] = []
        pg_dir = Path(tempfile.mkdtemp(prefix="segments-pg-"))  # the server user owns it
        if (PG_BIN / "initdb").exists():
            pg_env, pg_ctl = start_postgres(pg_dir)
            env.update(pg_env)
            targets.append(("postgres", ["--target", "postgres"]))
        try:
            for target, where in targets:
                common = ["--specs", str(specs), *where]
                subprocess.run([str(SEGMENTS), "load", "--users", str(folder / "users.csv"), "--events", str(folder / "events.csv"), *common], env=env, check=True, capture_output=True)
                for segment, path in lists.items():
                    seconds, rss, out = timed([str(SEGMENTS), "upload", segment, str(path), *common], env)
                    summary = " / ".join(line.strip() for line in out.splitlines()[1:4])
                    results.append((target, segment, seconds, rss, summary))
                    print(f"{target:9} {segment:8} {seconds:7.1f} s {rss:6d} MB  {summary}", flush=True)
        finally:
            if pg_ctl:
                subprocess.run([*pg_ctl, "-m", "fast", "-w", "stop"], check=False, capture_output=True)
            shutil.rmtree(pg_dir, ignore_errors=True)
    lines = [
        "# `segments upload` of a 1M-row list (issue 14)", "",
        f"`bench/upload_bench.py --rows {args.rows}`, {time.strftime('%Y-%m-%d')}, {platform.node()} "
        f"({os.cpu_count()} cores, shared), Python {sys.version.split()[0]}. One run each: the machine is shared.", "",
        "| engine | list | wall s | peak RSS MB | report |", "| --- | --- | --- | --- | --- |",
        *[f"| {t} | {s} | {sec:.1f} | {rss} | {summary} |" for t, s, sec, rss, summary in results], "",
    ]
    args.out.write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
