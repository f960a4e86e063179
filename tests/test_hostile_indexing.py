"""Index runs under attack (issue 16): a FIFO swapped in mid-run, a decoder that hangs or dies, a
decompression bomb, Ctrl-C and SIGKILL, unreadable folders and files, a rebuild given one folder
of several. Each run ends in bounded time, keeps every photo it had, and says what happened."""

from __future__ import annotations

import json
import os
import signal
import struct
import time
import zlib
from pathlib import Path

import pytest

from indexer.reader import REASON_WORKER_DIED
from pixseek_data import DEMO_MODEL_DIR
from pixseek_data.shapes import generate_gallery
from tests.conftest import TEST_WORKERS
from tests.harness import DECODER_FAULT, assert_consistent, assert_one_line_error, cli, env, forker, read_state  # noqa: F401,E501 (fixtures)

MODEL = f"local-dir:{DEMO_MODEL_DIR}"
DEADLINE = 60  # seconds a run may take here before it counts as hung (each takes a few)


def _gallery(folder: Path, per_class: int = 1, seed: int = 16) -> list[str]:
    folder.mkdir(parents=True)
    return sorted(str(r.path) for r in generate_gallery(folder, per_class=per_class, seed=seed))


def _args(folder: Path | list[Path], lib: Path, workers: int = TEST_WORKERS, *extra: str) -> list[str]:
    folders = folder if isinstance(folder, list) else [folder]
    return [
        "index",
        *map(str, folders),
        "--library",
        str(lib),
        "--model",
        MODEL,
        "--workers",
        str(workers),
        "--json",
        *extra,
    ]


def _finish(run, deadline: float = DEADLINE) -> int:
    """The run's exit status; a run still going at the deadline is killed and fails the test."""
    end = time.monotonic() + deadline
    while run.poll() is None:
        if time.monotonic() > end:
            os.killpg(run.pid, signal.SIGKILL)
            os.killpg(run.pid, signal.SIGCONT)
            run.wait()
            pytest.fail(f"hung: still running after {deadline} s")
        time.sleep(0.05)
    return run.returncode


def _statuses(lib: Path) -> dict[str, tuple[str, str | None]]:
    return {p: (st, reason) for p, (_, st, reason, _) in read_state(lib).rows.items()}


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, stack = set(), [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# High 3: a FIFO swapped in for a photo, and Ctrl-C ------------------------------------------------
def test_a_fifo_swapped_in_mid_run_is_skipped_and_the_run_finishes(tmp_path, env, forker):
    photos = _gallery(tmp_path / "photos", per_class=3)
    lib = tmp_path / "lib"
    run = forker.start(_args(tmp_path / "photos", lib), env, fault="flushed:1:stop", commit_every=4)
    run.wait_until_stopped()
    fifo = photos[-1]  # decoded last, long after the first commit
    os.unlink(fifo)
    os.mkfifo(fifo)
    os.kill(run.pid, signal.SIGCONT)
    assert _finish(run) == 0, run.stderr
    statuses = _statuses(lib)
    assert statuses[fifo][0] == "skipped" and "not a regular file" in statuses[fifo][1]
    assert all(statuses[p][0] == "indexed" for p in photos[:-1])


def test_ctrl_c_ends_a_run_within_seconds_even_with_a_hung_decoder(tmp_path, env, forker):
    photos = _gallery(tmp_path / "photos", per_class=3)
    lib = tmp_path / "lib"
    hung = os.path.basename(photos[-1])  # reached after the first commit
    run = forker.start(
        _args(tmp_path / "photos", lib, 2),
        {**env, DECODER_FAULT: f"{hung}:hang"},
        fault="flushed:1:stop",
        commit_every=4,
    )
    run.wait_until_stopped()
    os.kill(run.pid, signal.SIGCONT)
    time.sleep(0.5)  # the workers reach the hung file
    os.killpg(run.pid, signal.SIGINT)  # a terminal's Ctrl-C goes to the whole process group
    assert _finish(run, deadline=5) == 130, run.stderr
    assert "interrupted" in run.stderr and "Traceback" not in run.stderr
    assert read_state(lib).ids("indexed")  # what was embedded is kept


def test_a_sigkilled_run_leaves_no_process_behind(tmp_path, env, forker):
    _gallery(tmp_path / "photos", per_class=3)
    lib = tmp_path / "lib"
    run = forker.start(_args(tmp_path / "photos", lib, 2), env, fault="flushed:1:stop", commit_every=4)
    run.wait_until_stopped()
    left = _descendants(run.pid)
    assert left, "no decoder processes were started"
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    end = time.monotonic() + 10
    while any(_alive(p) for p in left) and time.monotonic() < end:
        time.sleep(0.1)
    assert not [p for p in left if _alive(p)]


# High 6: decompression bombs and a dead decoder ---------------------------------------------------
def _rgba_png(path: Path, side: int) -> None:
    """A real, valid all-transparent RGBA PNG: a few MB on disk, side x side x 4 bytes decoded."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    row = 1 + side * 4
    compressor, parts, block = zlib.compressobj(1), [], bytes(row * 64)
    for top in range(0, side, 64):
        parts.append(compressor.compress(block[: row * min(64, side - top)]))
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)
    idat = chunk(b"IDAT", b"".join(parts))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b""))


def test_an_rgba_bomb_under_the_pixel_cap_is_refused_by_its_decoded_size(tmp_path, demo_spec):
    from indexer.runner import run_index

    photos = _gallery(tmp_path / "photos")
    bomb = tmp_path / "photos" / "bomb.png"
    _rgba_png(bomb, 13370)  # 178.8 MP: under the 179 MP cap, but 715 MB as RGBA
    report = run_index(tmp_path / "lib", [tmp_path / "photos"], model=demo_spec, workers=TEST_WORKERS)
    assert [(p, r.split(":")[0]) for p, r in report.skipped] == [(str(bomb), "too large")]
    assert "RGBA" in report.skipped[0][1]
    assert_consistent(tmp_path / "lib", {**{p: "indexed" for p in photos}, str(bomb): "skipped"})


def test_a_file_that_kills_its_decoder_is_skipped_and_the_run_goes_on(tmp_path, env, forker):
    photos = _gallery(tmp_path / "photos", per_class=2)
    lib = tmp_path / "lib"
    killer = photos[20]
    run = forker.run(_args(tmp_path / "photos", lib, 2), {**env, DECODER_FAULT: f"{os.path.basename(killer)}:exit"})
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["skipped"] == [{"path": killer, "reason": REASON_WORKER_DIED}]
    assert_consistent(lib, {p: "skipped" if p == killer else "indexed" for p in photos})
    again = forker.run(_args(tmp_path / "photos", lib, 2), {**env, DECODER_FAULT: f"{os.path.basename(killer)}:exit"})
    assert again.returncode == 0 and json.loads(again.stdout)["unchanged"] == len(photos)


# High 4: --rebuild given one folder of several -----------------------------------------------------
def test_rebuild_of_one_folder_of_several_is_refused(tmp_path):
    a, b = _gallery(tmp_path / "A", seed=1), _gallery(tmp_path / "B", seed=2)
    lib = tmp_path / "lib"
    cli(*_args([tmp_path / "A", tmp_path / "B"], lib))
    refused = cli(*_args(tmp_path / "B", lib, TEST_WORKERS, "--rebuild"), code=1)
    assert_one_line_error(refused, "--rebuild", str(tmp_path / "A"), "pixseek index --rebuild")
    assert_consistent(lib, {p: "indexed" for p in a + b})
    rebuilt = json.loads(cli(*_args([tmp_path / "A", tmp_path / "B"], lib, TEST_WORKERS, "--rebuild")).stdout)
    assert rebuilt["embedded"] == len(a + b)
    assert_consistent(lib, {p: "indexed" for p in a + b}, files_changed=True)


# Medium 7, 8: unreadable folders and files ---------------------------------------------------------
def test_an_unreadable_folder_keeps_its_photos(tmp_path, env, forker):
    if not forker.permissions_apply:
        pytest.skip("no way to make permissions apply here")
    kept, other = _gallery(tmp_path / "photos" / "d1", seed=1), _gallery(tmp_path / "photos" / "d2", seed=2)
    lib = tmp_path / "lib"
    assert forker.run(_args(tmp_path / "photos", lib), env).returncode == 0
    (tmp_path / "photos" / "d1").chmod(0)
    try:
        run = forker.run(_args(tmp_path / "photos", lib), env)
    finally:
        (tmp_path / "photos" / "d1").chmod(0o755)
    report = json.loads(run.stdout)
    assert report["removed"] == 0 and report["unreadable"] == [str(tmp_path / "photos" / "d1")]
    assert_consistent(lib, {p: "indexed" for p in kept + other})


def test_a_permission_skip_is_retried_on_the_next_run(tmp_path, env, forker):
    if not forker.permissions_apply:
        pytest.skip("no way to make permissions apply here")
    photos = _gallery(tmp_path / "photos")
    lib = tmp_path / "lib"
    locked = Path(photos[3])
    locked.chmod(0)
    try:
        first = json.loads(forker.run(_args(tmp_path / "photos", lib), env).stdout)
    finally:
        locked.chmod(0o644)
    assert [s["path"] for s in first["skipped"]] == [str(locked)]
    second = json.loads(forker.run(_args(tmp_path / "photos", lib), env).stdout)
    assert second["embedded"] == 1 and second["skipped"] == []
    assert_consistent(lib, {p: "indexed" for p in photos})


# Low: refusals before any work, and names fit for a terminal ---------------------------------------
@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """(photo folder, its library): 24 shapes, one with a newline and an escape sequence in its name."""
    folder = tmp_path_factory.mktemp("small") / "photos"
    photos = _gallery(folder)
    evil = folder / "evil\n\x1b[31mred.jpg"
    os.rename(photos[0], evil)
    lib = folder.parent / "lib"
    cli(*_args(folder, lib))
    return folder, lib, evil


@pytest.mark.parametrize("option", [["--workers", "-1"], ["--device", "bogus"], ["--batch-size", "0"]])
def test_bad_index_options_are_refused_before_any_row_is_written(tmp_path, option):
    _gallery(tmp_path / "photos")
    lib = tmp_path / "lib"
    refused = cli("index", str(tmp_path / "photos"), "-L", str(lib), "--model", MODEL, *option, code=1)
    assert_one_line_error(refused, option[0].lstrip("-").split("-")[0])
    assert not (lib / "catalog.db").exists()


def test_a_first_index_whose_model_fails_leaves_nothing_pending(tmp_path, monkeypatch):
    import indexer.runner
    from indexer.errors import PixseekError

    photos = _gallery(tmp_path / "photos")
    lib = tmp_path / "lib"

    def cannot_download(*args, **kwargs):
        raise PixseekError("cannot download the model", "check the network")

    with monkeypatch.context() as patched:
        patched.setattr(indexer.runner, "load_encoder", cannot_download)
        cli(*_args(tmp_path / "photos", lib), code=1)
    assert read_state(lib).rows == {}
    report = json.loads(cli(*_args(tmp_path / "photos", lib)).stdout)
    assert report["added"] == len(photos) == report["embedded"]


@pytest.mark.parametrize(
    "args, words",
    [
        (["--like", "99999999999999999999999"], ["99999999999999999999999", "not in the library"]),
        (["a cat", "--min-score", "nan"], ["--min-score"]),
        (["a cat", "--min-z", "nan"], ["--min-z"]),
        (["a cat", "--not", ""], ["--not"]),
        (['1e309:"cat"'], ["bad weight", "1e309"]),
        (['nan:"cat"'], ["bad weight"]),
        (["--", '-0:"cat"'], ["bad weight"]),
        (["9" * 400 + ':"cat"'], ["bad weight"]),
        ([" + ".join(["cat"] * 17)], ["too many terms"]),
        (["cat " * 300], ["query too long"]),
        (["a cat", "--folder", "/nowhere/indexed"], ["no indexed photos in /nowhere/indexed"]),
    ],
)
def test_bad_search_input_is_refused_in_one_line(small, args, words):
    _, lib, _ = small
    refused = cli("search", "-L", str(lib), *args, code=1)
    assert_one_line_error(refused, *words)


def test_labels_from_a_device_or_a_huge_file_are_refused(small, tmp_path):
    _, lib, _ = small
    assert_one_line_error(cli("tag", "--labels", "/dev/zero", "-L", str(lib), code=1), "/dev/zero")
    huge = tmp_path / "labels.txt"
    huge.write_bytes(b"cat\n" * (1 << 19))
    assert_one_line_error(cli("tag", "--labels", str(huge), "-L", str(lib), code=1), "over 1 MB")


def test_control_characters_in_names_are_escaped_for_the_terminal_and_exact_in_json(small):
    _, lib, evil = small
    human = cli("search", "a red circle", "-L", str(lib), "-k", "100").stdout
    assert "\x1b" not in human and len(human.splitlines()) == 24
    assert str(evil).replace("\n", "\\n").replace("\x1b", "\\x1b") in human
    exact = json.loads(cli("search", "a red circle", "-L", str(lib), "-k", "100", "--json").stdout)
    assert str(evil) in {r["path"] for r in exact}


def test_a_library_inside_the_photo_folder_leaves_its_thumbnails_out(tmp_path):
    photos = _gallery(tmp_path / "photos")
    lib = tmp_path / "photos" / ".." / "photos" / "library"
    cli(*_args(tmp_path / "photos", lib))
    (lib / "thumbs").mkdir(exist_ok=True)
    os.link(photos[0], lib / "thumbs" / "thumb.jpg")
    report = json.loads(cli(*_args(tmp_path / "photos", lib)).stdout)
    assert report["added"] == 0 and report["unchanged"] == len(photos)


def test_a_library_that_is_a_file_or_missing_is_refused(tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("not a library")
    for command in (["search", "cat"], ["info"], ["index", str(tmp_path)]):
        assert_one_line_error(cli(*command, "-L", str(afile), code=1), "is a file")
    assert_one_line_error(cli("ui", "-L", str(tmp_path / "missing"), code=1), "no library")


def test_a_library_below_an_unreadable_folder_is_one_line(tmp_path, env, forker):
    if not forker.permissions_apply:
        pytest.skip("no way to make permissions apply here")
    locked = tmp_path / "noperm"
    locked.mkdir()
    locked.chmod(0)
    try:
        run = forker.run(["info", "--library", str(locked / "sub")], env)
    finally:
        locked.chmod(0o755)
    assert_one_line_error(run, "permission", str(locked / "sub"))


def test_deleting_the_lock_file_during_a_run_lets_no_second_writer_in(tmp_path, env, forker):
    _gallery(tmp_path / "photos")
    lib = tmp_path / "lib"
    run = forker.start(_args(tmp_path / "photos", lib), env, fault="flushed:1:stop", commit_every=4)
    run.wait_until_stopped()
    try:
        (lib / "index.lock").unlink()
        second = forker.run(_args(tmp_path / "photos", lib), env)
        assert_one_line_error(second, "already updating")
    finally:
        os.kill(run.pid, signal.SIGCONT)
    assert _finish(run) == 0, run.stderr
