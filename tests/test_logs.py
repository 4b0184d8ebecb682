"""Logs as an operator reads or ships them: readable text by default, JSON lines with
AGENT_STREAM_LOG_FORMAT=json, every line about a call naming its run (contract section 9)."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.cloudonix_emulator import CloudonixEmulator
from tests.conftest import TOKEN
from tests.test_process import ROOT, serve_one_call


async def serve_and_log(
    tmp_path: Path, cloudonix: tuple[CloudonixEmulator, str], **env: str
) -> tuple[str, str, str, str]:
    """One call into `python app.py` with `env`: (stderr, agent uuid, API key, run name)."""
    db, agent_uuid, api_key, stderr = await serve_one_call(tmp_path, cloudonix, **env)
    with sqlite3.connect(db) as conn:
        (run_name,) = conn.execute("SELECT name FROM workflow_runs").fetchone()
    return stderr, agent_uuid, api_key, run_name


async def test_json_logs_are_one_object_a_line_and_name_the_run(
    tmp_path: Path, cloudonix: tuple[CloudonixEmulator, str]
) -> None:
    stderr, agent_uuid, api_key, run_name = await serve_and_log(
        tmp_path, cloudonix, AGENT_STREAM_LOG_FORMAT="json"
    )
    lines: list[dict[str, Any]] = [json.loads(line) for line in stderr.splitlines()]
    assert lines, "the server wrote no log lines"
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys(), line
        assert line["time"].endswith("Z") and line["level"] in {"DEBUG", "INFO", "WARNING", "ERROR"}

    about_the_call = [line for line in lines if line.get("run")]
    messages = [line["message"] for line in about_the_call]
    assert any(message.startswith("handshake done in") for message in messages), messages
    assert any(message.startswith("running (") for message in messages), messages
    assert "completed: server_shutdown (close 1001)" in messages
    for line in about_the_call:
        assert line["run"] == run_name
        assert line["agent"] == f"{agent_uuid[:8]}…"
        assert line["provider"] == "cloudonix"
        assert "[run " not in line["message"]  # the fields, not a prefix, say which call
    # lines about no call carry no call fields
    started = next(line for line in lines if line["message"].startswith("Agent Stream on http://"))
    assert "run" not in started and "agent" not in started

    assert agent_uuid not in stderr and TOKEN not in stderr and api_key not in stderr


async def test_text_logs_stay_readable_with_the_run_in_front(
    tmp_path: Path, cloudonix: tuple[CloudonixEmulator, str]
) -> None:
    stderr, agent_uuid, _, run_name = await serve_and_log(tmp_path, cloudonix)
    short = f"{agent_uuid[:8]}…"
    assert f"agent_stream.calls.call: [run {run_name} agent {short}] completed: server_shutdown" in stderr
    assert not any(line.startswith("{") for line in stderr.splitlines())
    assert agent_uuid not in stderr


def test_an_unknown_log_format_stops_the_start_with_one_clear_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "app.py", "--db", str(tmp_path / "x.db")], cwd=ROOT, text=True,
        env=os.environ | {"AGENT_STREAM_LOG_FORMAT": "xml"},
        capture_output=True, timeout=60, check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "error: AGENT_STREAM_LOG_FORMAT must be one of text, json, not 'xml'"
