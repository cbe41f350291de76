"""Saving a tool result's full text in the sandbox, where the model's code may have planted links."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

from ghost.agent.outputs import output_name, save_output


def test_saves_once_and_reuses_the_same_name(tmp_path: Path) -> None:
    first = save_output(tmp_path, "hello")
    assert first == f".ghost/outputs/{output_name('hello')}"
    assert (tmp_path / first).read_text() == "hello"
    assert save_output(tmp_path, "hello") == first


def test_a_planted_file_under_the_name_is_never_overwritten(tmp_path: Path) -> None:
    name = save_output(tmp_path, "text")
    (tmp_path / name).write_text("tampered")
    other = save_output(tmp_path, "text")
    assert other != name and (tmp_path / other).read_text() == "text"
    assert (tmp_path / name).read_text() == "tampered"


def test_symlinked_folders_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "sandbox"
    (root / ".ghost").mkdir(parents=True)
    # The probe works: a real folder under the same name receives the file.
    assert save_output(root, "probe") is not None and any((root / ".ghost" / "outputs").iterdir())
    shutil.rmtree(root / ".ghost" / "outputs")
    os.symlink(outside, root / ".ghost" / "outputs")
    assert save_output(root, "secret") is None
    (root / ".ghost" / "outputs").unlink()
    shutil.rmtree(root / ".ghost")
    os.symlink(outside, root / ".ghost")
    assert save_output(root, "secret") is None
    assert list(outside.iterdir()) == []


def test_a_planted_symlink_under_the_name_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.write_text("keep")
    root = tmp_path / "sandbox"
    (root / ".ghost" / "outputs").mkdir(parents=True)
    os.symlink(target, root / ".ghost" / "outputs" / output_name("payload"))
    saved = save_output(root, "payload")
    assert saved is not None and not (root / saved).is_symlink() and (root / saved).read_text() == "payload"
    assert target.read_text() == "keep"


def test_swapping_the_folder_for_a_symlink_never_writes_outside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "sandbox"
    (root / ".ghost").mkdir(parents=True)
    folder, parked, link = root / ".ghost" / "outputs", root / ".ghost" / "parked", root / ".ghost" / "link"
    os.symlink(outside, link)
    stop = threading.Event()

    def swap() -> None:  # the model's code, flipping the folder and a symlink as fast as it can
        while not stop.is_set():
            try:
                if folder.is_symlink():
                    folder.unlink()
                    if parked.exists():
                        os.rename(parked, folder)
                else:
                    if folder.exists():
                        shutil.rmtree(parked, ignore_errors=True)
                        os.rename(folder, parked)
                    os.symlink(outside, folder)
            except OSError:
                pass

    swapper = threading.Thread(target=swap)
    swapper.start()
    try:
        saved = [save_output(root, f"attempt {n}") for n in range(3000)]
    finally:
        stop.set()
        swapper.join()
    assert list(outside.iterdir()) == []
    assert any(saved) and not all(saved)  # both sides of the race happened
