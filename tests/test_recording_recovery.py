"""A process killed mid-call leaves its raw tracks behind; the next server start merges them
into the run's recording (or removes what no run can use), and never touches a live call's."""
from __future__ import annotations

import array
import dataclasses
import logging
import wave
from pathlib import Path

import pytest

from agent_stream.config import Settings
from agent_stream.keys import STORE
from agent_stream.pipeline.recorder import recover_recordings
from agent_stream.store import Store
from tests.conftest import Crash, ServeApp


def pcm(samples: list[int]) -> bytes:
    return array.array("h", samples).tobytes()


def read_stereo(path: Path) -> tuple[list[int], list[int]]:
    """The left and right samples of a WAV, after checking it is the recorder's format."""
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        frames = array.array("h", wav.readframes(wav.getnframes()))
    return list(frames[0::2]), list(frames[1::2])


async def test_a_killed_calls_tracks_become_its_runs_recording(
    serve_app: ServeApp, settings: Settings, crash: Crash, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent_stream")
    run = await crash.open_run()
    _, api_key = await crash.store.create_api_key(crash.owner.id, "tests")
    caller = [i % 2000 - 1000 for i in range(20000)]  # 2.5 s: more than one merge block
    agent = [7 - i % 300 for i in range(12000)]  # 1.5 s: the agent fell silent before
    crash.tracks(run.id, caller=pcm(caller), agent=pcm(agent))
    await crash.store.close()

    client = await serve_app(settings)
    recovered = await client.app[STORE].get_run_by_id(run.id)
    assert (recovered.state, recovered.end_reason) == ("failed", "server_restarted")
    wav = crash.recordings / f"{run.id}.wav"
    assert recovered.recording_path == str(wav)
    assert recovered.logs["recording_recovered"] is True
    assert recovered.logs["recording_recovered_seconds"] == 2.5
    left, right = read_stereo(wav)
    assert left == caller
    assert right == agent + [0] * 8000
    assert sorted(p.name for p in crash.recordings.iterdir()) == [wav.name]  # raw tracks gone
    assert "recordings left by a previous process: 1 recovered, 0 leftover(s) removed" in caplog.text

    response = await client.get(f"/api/v1/workflow-runs/{run.id}/recording",
                                headers={"Authorization": f"Bearer {api_key}"})
    assert response.status == 200
    assert response.headers["Content-Type"] == "audio/wav"
    assert await response.read() == wav.read_bytes()


async def test_leftovers_no_run_can_use_are_removed_and_a_recording_stays(
    serve_app: ServeApp, settings: Settings, crash: Crash, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent_stream")
    recorded = await crash.open_run()
    wav = crash.recordings / f"{recorded.id}.wav"
    with wave.open(str(wav), "wb") as out:  # its call ended and was merged...
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(pcm([5, 6] * 800))
    kept = wav.read_bytes()
    await crash.store.finish_run(recorded.id, state="completed", end_reason="caller_hangup",
                                 close_code=1000, recording_path=str(wav))
    crash.tracks(recorded.id, caller=pcm([1] * 80), agent=pcm([2] * 80))  # ...tracks stayed
    crash.tracks(4242, caller=pcm([3] * 80), agent=pcm([4] * 80))  # a run that does not exist
    (crash.recordings / "notes.txt").write_text("not ours")
    await crash.store.close()

    client = await serve_app(settings)
    run = await client.app[STORE].get_run_by_id(recorded.id)
    assert (run.state, run.recording_path) == ("completed", str(wav))
    assert "recording_recovered" not in run.logs
    assert wav.read_bytes() == kept
    assert sorted(p.name for p in crash.recordings.iterdir()) == [wav.name, "notes.txt"]
    assert "recordings left by a previous process: 0 recovered, 2 leftover(s) removed" in caplog.text


async def test_a_start_that_may_not_recover_leaves_everything_for_the_next(
    serve_app: ServeApp, settings: Settings, crash: Crash
) -> None:
    run = await crash.open_run()
    crash.tracks(run.id, caller=pcm([9] * 160), agent=pcm([8] * 160))
    await crash.store.close()
    before = sorted(p.name for p in crash.recordings.iterdir())

    cli_call = await serve_app(dataclasses.replace(settings, recover_at_start=False))
    untouched = await cli_call.app[STORE].get_run_by_id(run.id)
    assert (untouched.state, untouched.recording_path) == ("running", None)
    assert sorted(p.name for p in crash.recordings.iterdir()) == before
    await cli_call.close()

    server = await serve_app(settings)
    recovered = await server.app[STORE].get_run_by_id(run.id)
    assert (recovered.state, recovered.recording_path) == ("failed", str(crash.recordings / f"{run.id}.wav"))
    assert read_stereo(crash.recordings / f"{run.id}.wav") == ([9] * 160, [8] * 160)
    assert sorted(p.name for p in crash.recordings.iterdir()) == [f"{run.id}.wav"]


async def test_a_track_cut_mid_sample_or_missing_still_gives_a_recording(
    serve_app: ServeApp, settings: Settings, crash: Crash
) -> None:
    cut = await crash.open_run()
    crash.tracks(cut.id, caller=pcm([11, -12, 13]) + b"\x7f", agent=pcm([21, 22]) + b"\x01")
    agent_only = await crash.open_run()
    crash.tracks(agent_only.id, caller=None, agent=pcm([31, 32, 33, 34]))
    await crash.store.close()

    client = await serve_app(settings)
    store: Store = client.app[STORE]
    assert read_stereo(crash.recordings / f"{cut.id}.wav") == ([11, -12, 13], [21, 22, 0])
    assert read_stereo(crash.recordings / f"{agent_only.id}.wav") == ([0] * 4, [31, 32, 33, 34])
    for run_id in (cut.id, agent_only.id):
        run = await store.get_run_by_id(run_id)
        assert run.recording_path == str(crash.recordings / f"{run_id}.wav")
        assert run.logs["recording_recovered"] is True
    assert sorted(p.name for p in crash.recordings.iterdir()) == sorted(
        [f"{cut.id}.wav", f"{agent_only.id}.wav"])


async def test_a_recording_that_cannot_be_merged_is_logged_and_the_start_goes_on(
    serve_app: ServeApp, settings: Settings, crash: Crash, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent_stream")
    blocked = await crash.open_run()
    crash.tracks(blocked.id, caller=pcm([1] * 80), agent=pcm([2] * 80))
    (crash.recordings / f"{blocked.id}.wav").mkdir()  # the WAV cannot be written
    fine = await crash.open_run()
    crash.tracks(fine.id, caller=pcm([3] * 80), agent=pcm([4] * 80))
    await crash.store.close()

    client = await serve_app(settings)
    store: Store = client.app[STORE]
    failed = await store.get_run_by_id(blocked.id)
    assert (failed.state, failed.recording_path) == ("failed", None)
    assert "recording_recovered" not in failed.logs
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"recording of {blocked.name} not recovered: IsADirectoryError: Is a directory" in warnings
    assert (await store.get_run_by_id(fine.id)).logs["recording_recovered"] is True
    assert sorted(p.name for p in crash.recordings.iterdir()) == sorted(
        [f"{blocked.id}.wav", f"{fine.id}.wav"])  # both runs' raw tracks removed
    assert "1 recovered, 1 leftover(s) removed" in caplog.text
    assert (await client.get("/api/v1/health")).status == 200


async def test_the_tracks_of_a_run_still_open_are_never_touched(
    settings: Settings, crash: Crash
) -> None:
    """Without the crash sweep (another process may be mid-call), an open run's tracks stay."""
    live = await crash.open_run()
    crash.tracks(live.id, caller=pcm([1] * 80), agent=pcm([2] * 80))
    crash.tracks(4242, caller=pcm([3] * 80), agent=None)
    try:
        found = await recover_recordings(crash.store, crash.recordings, sample_rate=8000)
        assert (await crash.store.get_run_by_id(live.id)).recording_path is None
    finally:
        await crash.store.close()
    assert (found.recovered, found.removed) == (0, 1)
    assert sorted(p.name for p in crash.recordings.iterdir()) == [
        f"{live.id}.agent.pcm", f"{live.id}.caller.pcm"]



async def test_tracks_with_no_audio_yet_are_removed_not_recovered(
    serve_app: ServeApp, settings: Settings, crash: Crash
) -> None:
    run = await crash.open_run()
    crash.tracks(run.id, caller=b"", agent=b"\x01")  # killed before a sample reached the disk
    await crash.store.close()

    client = await serve_app(settings)
    ended = await client.app[STORE].get_run_by_id(run.id)
    assert (ended.state, ended.recording_path) == ("failed", None)
    assert "recording_recovered" not in ended.logs
    assert list(crash.recordings.iterdir()) == []
