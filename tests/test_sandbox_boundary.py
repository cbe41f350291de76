"""The sandbox boundary against what the sandbox contains: links, races, FIFOs, hostile sidecars,
deep trees and over-limit archives — attacked over HTTP on a real Ghost with real bubblewrap.

Everything below the sandbox root is the attacker's: these tests plant what sandboxed code could
plant (links to a canary folder outside, FIFOs, 2,000-level trees, 3,000-level JSON) and race a
process that swaps a folder for a link while Ghost works. After each test Ghost still answers and
the canary folder outside the sandbox is byte for byte what it was; at the end Ghost starts again
on the same home.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ghost.testing.fake_upstream import FakeUpstream, Reply
from ghost.testing.server import GhostServer

SECRET = "CANARY-SECRET-4242"
TIMEOUT = 120  # a hang guard only


# --- the canary: files outside the sandbox that no attack may read or change ------------------------
def checksum(folder: Path) -> str:
    """Names, kinds and contents of everything below `folder`, links not followed."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath, name)
            info = path.lstat()
            digest.update(f"{path.relative_to(folder)}|{stat.S_IFMT(info.st_mode)}|".encode())
            if stat.S_ISREG(info.st_mode):
                digest.update(path.read_bytes())
            elif stat.S_ISLNK(info.st_mode):
                digest.update(os.readlink(path).encode())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def canary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("canary")
    (folder / "secret.txt").write_text(SECRET + "\n")
    (folder / "f").write_text(SECRET + "\n")
    (folder / "victim.sh").write_text("#!/bin/sh\necho harmless\n")
    (folder / "sub").mkdir()
    (folder / "sub" / "deeper.txt").write_text(SECRET)
    return folder


@pytest.fixture(scope="module")
def server(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GhostServer]:
    with GhostServer("--upstream-url", upstream.url, "--sandbox-timeout", "10",
                     "--scratchpad-max-entries", "50", "--scratchpad-max-value-bytes", "4096",
                     "--max-tool-rounds", "3", "--upstream-max-tool-calls", "100",  # 60-call rounds below
                     "--context-window", "1000000",  # 100 KB sidecars go through write_file
                     home=tmp_path_factory.mktemp("boundary-home")) as ghost:
        yield ghost


@pytest.fixture(scope="module")
def sandbox(server: GhostServer) -> Path:
    return server.home / "sandbox"


@pytest.fixture(autouse=True)
def boundary_holds(server: GhostServer, canary: Path, sandbox: Path) -> Iterator[None]:
    """After each test: the canary is untouched and Ghost still answers."""
    before = checksum(canary)
    yield
    after = checksum(canary)
    for child in sandbox.iterdir():
        subprocess.run(["rm", "-rf", "--", str(child)], check=True)
    assert after == before, "a file outside the sandbox changed"
    assert httpx.get(server.url + "/api/health", headers=server.headers, timeout=30).status_code == 200


def test_the_canary_probe_sees_a_planted_change(canary: Path) -> None:
    before = checksum(canary)
    (canary / "planted.txt").write_text("x")
    assert checksum(canary) != before
    (canary / "planted.txt").unlink()
    (canary / "victim.sh").write_text("#!/bin/sh\necho harmless!\n")
    changed = checksum(canary)
    (canary / "victim.sh").write_text("#!/bin/sh\necho harmless\n")
    assert changed != before and checksum(canary) == before


# --- tool calls through the agent ------------------------------------------------------------------
def run_tools(server: GhostServer, upstream: FakeUpstream, calls: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Have the (fake) model call `calls` in one round; the tool results, in order."""
    upstream.script(Reply(content="", tool_calls=[{"name": n, "arguments": a} for n, a in calls]),
                    Reply(content="done"))
    reply = httpx.post(server.url + "/v1/chat/completions", headers=server.headers, timeout=TIMEOUT,
                       json={"model": "fake-model", "messages": [{"role": "user", "content": "go"}]})
    assert reply.status_code == 200, reply.text
    messages = upstream.chat_requests()[-1]["body"]["messages"]
    results = [m["content"] for m in messages if m.get("role") == "tool"]
    assert len(results) == len(calls)
    return results


def tool(server: GhostServer, upstream: FakeUpstream, tool_name: str, **arguments: Any) -> str:
    return run_tools(server, upstream, [(tool_name, arguments)])[0]


def health(server: GhostServer) -> dict[str, Any]:
    return httpx.get(server.url + "/api/health", headers=server.headers, timeout=30).json()


# --- 1. predictable temp names and final names that are links ---------------------------------------
def test_a_sidecar_temp_name_linked_outside_writes_nothing_there(server: GhostServer, upstream: FakeUpstream,
                                                                 sandbox: Path, canary: Path) -> None:
    skills = sandbox / "acquired_skills"
    skills.mkdir()
    # The names the old code used, and the final names, all pointing at host files.
    (skills / ".greet.json.tmp").symlink_to(canary / "victim.sh")
    (skills / ".greet.json.tmp-").symlink_to(canary / "victim.sh")
    (skills / "greet.json").symlink_to(canary / "secret.txt")
    (skills / "rel.json.tmp").symlink_to("../../../" + canary.name + "/new-file")
    result = tool(server, upstream, "create_skill", name="greet", description="$(touch /tmp/pwned)",
                  parameters={"type": "object", "properties": {}}, code="print('hi')", test_arguments={})
    assert "saved" in result, result
    assert not (skills / "greet.json").is_symlink()  # the link was replaced, not written through
    assert json.loads((skills / "greet.json").read_text())["name"] == "greet"
    assert "hi" in tool(server, upstream, "greet")
    # A failure count update rewrites the sidecar the same way.
    (skills / "greet.py").write_text("import sys; sys.exit(3)")
    tool(server, upstream, "greet")
    assert json.loads((skills / "greet.json").read_text())["failures"] == 1


def test_a_skills_folder_that_is_a_link_is_refused(server: GhostServer, upstream: FakeUpstream,
                                                  sandbox: Path, canary: Path) -> None:
    (sandbox / "acquired_skills").symlink_to(canary)
    result = tool(server, upstream, "create_skill", name="evil", description="d",
                  parameters={"type": "object", "properties": {}}, code="print(1)", test_arguments={})
    assert "not a link" in result


def test_write_append_and_upload_never_write_through_a_link(server: GhostServer, upstream: FakeUpstream,
                                                           sandbox: Path, canary: Path) -> None:
    (sandbox / "link.txt").symlink_to(canary / "victim.sh")
    (sandbox / "dangling").symlink_to(canary / "created-by-ghost")
    (sandbox / "out").symlink_to(canary)
    (sandbox / ".up.txt.ghost-upload").symlink_to(canary / "victim.sh")  # the old copy temp name
    results = run_tools(server, upstream, [
        ("write_file", {"path": "link.txt", "content": "pwned"}),
        ("append_file", {"path": "link.txt", "content": "pwned"}),
        ("append_file", {"path": "dangling", "content": "pwned"}),
        ("write_file", {"path": "out/new.txt", "content": "pwned"}),
        ("move_file", {"source": "out/secret.txt", "destination": "stolen.txt"}),
        ("read_file", {"path": "out/secret.txt"}),
        ("search_files", {"query": "CANARY", "path": "out"}),
        ("delete_file", {"path": "out/secret.txt"}),
    ])
    assert all("symbolic link" in r for r in results), results
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=TIMEOUT) as http:
        assert http.post("/api/upload", files={"file": ("link.txt", b"pwned")}).status_code == 404
        assert http.post("/api/upload", files={"file": ("x", b"pwned")}, data={"path": "out"}).status_code == 404
        assert http.post("/api/upload", files={"file": ("up.txt", b"fine")}).status_code == 200
    assert (sandbox / "up.txt").read_bytes() == b"fine"
    # The links themselves remain the sandbox's own: deleting one removes the link only.
    assert "deleted" in tool(server, upstream, "delete_file", path="link.txt")
    assert not (sandbox / "link.txt").exists()


# --- 2. a swapper racing Ghost ---------------------------------------------------------------------
SWAPPER = textwrap.dedent("""
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    os.makedirs("race/d", exist_ok=True)
    for name in ("f", "g"):
        with open("race/d/" + name, "w") as handle:
            handle.write("inside\\n")
    os.symlink(sys.argv[1], "race/l")
    print("ready", flush=True)
    swaps = 0
    while not os.path.exists("race-stop"):
        # renameat2(AT_FDCWD, "race/d", AT_FDCWD, "race/l", RENAME_EXCHANGE)
        if libc.renameat2(-100, b"race/d", -100, b"race/l", 2) == 0:
            swaps += 1
    print(swaps, flush=True)
""")


@pytest.fixture()
def swapper(sandbox: Path, canary: Path) -> Iterator[subprocess.Popen[str]]:
    """A process in the sandbox folder swapping race/d (a real folder) with race/l (a link to the
    canary) as fast as it can."""
    process = subprocess.Popen([sys.executable, "-c", SWAPPER, str(canary)], cwd=sandbox,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    yield process
    (sandbox / "race-stop").touch()
    out, _ = process.communicate(timeout=30)
    assert int(out.strip()) > 1000, "the swapper hardly swapped: the race was not run"


ROUNDS = 40  # tool rounds; each has CALLS_PER_ROUND calls
CALLS_PER_ROUND = 60


@pytest.mark.timeout(900)  # thousands of operations on a busy machine; a hang guard only
def test_a_swapping_folder_never_lets_a_tool_out(server: GhostServer, upstream: FakeUpstream,
                                                 swapper: subprocess.Popen[str], canary: Path) -> None:
    calls = [("read_file", {"path": "race/d/f"}), ("write_file", {"path": "race/d/new.txt", "content": "w"}),
             ("append_file", {"path": "race/d/g", "content": "a"}), ("list_files", {"path": "race/d"}),
             ("search_files", {"query": "CANARY", "path": "race"}),
             ("move_file", {"source": "race/d/new.txt", "destination": "race/d/moved.txt", "overwrite": True})]
    # A call that got through to the real folder: without some, every call failing would pass.
    through = {"read_file": lambda result: result.startswith("inside"),
               "write_file": lambda result: result.startswith("wrote ")}
    seen, succeeded = 0, dict.fromkeys(through, 0)
    for _ in range(ROUNDS):
        batch = [calls[i % len(calls)] for i in range(CALLS_PER_ROUND)]
        for (name, _arguments), result in zip(batch, run_tools(server, upstream, batch), strict=True):
            assert SECRET not in result and "victim" not in result and "deeper" not in result, result
            seen += 1
            if name in through and through[name](result):
                succeeded[name] += 1
    assert seen == ROUNDS * CALLS_PER_ROUND
    assert all(succeeded.values()), f"no call of some tool ever got through the race: {succeeded}"


@pytest.mark.timeout(900)  # thousands of operations on a busy machine; a hang guard only
def test_a_swapping_folder_never_lets_a_download_or_save_out(server: GhostServer, swapper: subprocess.Popen[str],
                                                             canary: Path) -> None:
    served = 0
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=TIMEOUT) as http:
        for i in range(2000):
            response = http.get("/api/download/race/d/f")
            assert response.status_code in (200, 404), response.text
            assert SECRET.encode() not in response.content
            served += response.status_code == 200
            if i % 20 == 0:
                saved = http.post("/api/workspace/save")
                assert saved.status_code == 200, saved.text
                with zipfile.ZipFile(io.BytesIO(saved.content)) as archive:
                    for info in archive.infolist():
                        assert "secret" not in info.filename and "victim" not in info.filename
                        assert SECRET.encode() not in archive.read(info)
    assert served > 0  # the race let some downloads through to the real file


# --- 3. FIFOs and device files wherever Ghost can meet them ----------------------------------------
def plant_specials(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    os.mkfifo(folder / "pipe")
    try:
        os.mknod(folder / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        os.mkfifo(folder / "null")  # not root: a second FIFO stands in for the device


def test_fifos_and_devices_never_hang_a_tool(server: GhostServer, upstream: FakeUpstream, sandbox: Path) -> None:
    plant_specials(sandbox / "sp")
    (sandbox / "sp" / "text.txt").write_text("needle\n")
    results = run_tools(server, upstream, [
        ("read_file", {"path": "sp/pipe"}), ("read_file", {"path": "sp/null"}),
        ("append_file", {"path": "sp/pipe", "content": "x"}), ("append_file", {"path": "sp/null", "content": "x"}),
        ("search_files", {"query": "needle", "path": "sp"}), ("search_files", {"query": "x", "path": "sp/pipe"}),
        ("list_files", {"path": "sp", "recursive": True}),
    ] * 8)  # more than the file layer has threads: a blocked thread would show here
    assert all("not a regular file" in r for r in results[:4]), results[:4]
    assert results[4] == "sp/text.txt:1: needle"
    assert "pipe (special file)" in results[6]
    assert "wrote" in tool(server, upstream, "write_file", path="sp/pipe", content="now a file")
    assert (sandbox / "sp" / "pipe").read_text() == "now a file"


def test_fifos_never_hang_download_upload_or_save(server: GhostServer, sandbox: Path) -> None:
    plant_specials(sandbox / "sp")
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=TIMEOUT) as http:
        for _ in range(12):
            assert http.get("/api/download/sp/pipe").status_code == 404
            assert http.get("/api/download/sp/null").status_code == 404
        saved = http.post("/api/workspace/save")
        assert saved.status_code == 200
        names = zipfile.ZipFile(io.BytesIO(saved.content)).namelist()
        assert "sandbox/sp/" in names and not [n for n in names if n.endswith(("pipe", "null"))]
        assert http.post("/api/upload", files={"file": ("pipe", b"up")}, data={"path": "sp"}).status_code == 200
    assert (sandbox / "sp" / "pipe").read_bytes() == b"up"


# --- 4. hostile sidecars, by the model and by archive ------------------------------------------------
DEEP_JSON = "[" * 3000 + "]" * 3000
BAD_SIDECARS = {"list": "[]", "deep": DEEP_JSON, "deepobj": '{"a":' * 3000 + "1" + "}" * 3000,
                "text": "not json", "number": "7", "noname": '{"description": "x"}',
                "badparams": '{"name": "badparams", "description": "x", "parameters": "nope"}',
                "huge": json.dumps({"name": "huge", "description": "x" * 100_000})}
GOOD_SIDECAR = {"name": "good", "description": "a good skill", "parameters": {"type": "object", "properties": {}}}


def workspace_zip(files: dict[str, str | bytes], scratchpad: dict[str, Any] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("session.json", json.dumps({"format": "ghost-workspace", "version": 1,
                                                     "chat_history": [], "scratchpad": scratchpad or {}}))
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def load(server: GhostServer, archive: bytes) -> httpx.Response:
    return httpx.post(server.url + "/api/workspace/load", content=archive, timeout=TIMEOUT,
                      headers={**server.headers, "content-type": "application/zip"})


def skipped_names(server: GhostServer) -> set[str]:
    return {entry["name"] for entry in health(server)["skills"]["skipped"]}


def test_bad_sidecars_written_by_the_model_are_skipped_not_fatal(server: GhostServer, upstream: FakeUpstream,
                                                                sandbox: Path) -> None:
    calls = [("write_file", {"path": f"acquired_skills/{name}.json", "content": text})
             for name, text in BAD_SIDECARS.items()]
    calls += [("write_file", {"path": f"acquired_skills/{name}.py", "content": "print(1)"}) for name in BAD_SIDECARS]
    calls += [("write_file", {"path": "acquired_skills/good.json", "content": json.dumps(GOOD_SIDECAR)}),
              ("write_file", {"path": "acquired_skills/good.py", "content": "print('good')"})]
    assert all("wrote" in r for r in run_tools(server, upstream, calls))
    os.mkfifo(sandbox / "acquired_skills" / "fifo.json")
    (sandbox / "acquired_skills" / "fifo.py").write_text("print(1)")
    # A workspace load (of an archive with nothing new) re-scans the live skills folder.
    assert load(server, workspace_zip({"sandbox/x.txt": "x"})).status_code == 200
    assert skipped_names(server) == {f"{name}.json" for name in BAD_SIDECARS} | {"fifo.json"}
    reasons = {entry["name"]: entry["reason"] for entry in health(server)["skills"]["skipped"]}
    # Refused by the checks made before parsing (a clear reason), not by what parsing ran into.
    assert "nested deeper than" in reasons["deep.json"] and "nested deeper than" in reasons["deepobj.json"]
    assert "larger than" in reasons["huge.json"], reasons
    assert health(server)["skills"]["loaded"] == 1
    assert "good" in tool(server, upstream, "good")


def test_bad_sidecars_in_an_archive_are_skipped_and_the_next_start_works(server: GhostServer,
                                                                        sandbox: Path) -> None:
    files: dict[str, str | bytes] = {f"acquired_skills/{name}.json": text for name, text in BAD_SIDECARS.items()}
    files |= {f"acquired_skills/{name}.py": "print(1)" for name in BAD_SIDECARS}
    files |= {"acquired_skills/good.json": json.dumps(GOOD_SIDECAR), "acquired_skills/good.py": "print(2)"}
    response = load(server, workspace_zip(files))
    assert response.status_code == 200, response.text
    assert skipped_names(server) == {f"{name}.json" for name in BAD_SIDECARS}
    os.mkfifo(sandbox / "acquired_skills" / "fifo.json")
    (sandbox / "acquired_skills" / "fifo.py").write_text("print(1)")
    server.stop()
    server.start()  # the scan at start meets all of it, the FIFO included
    assert skipped_names(server) == {f"{name}.json" for name in BAD_SIDECARS} | {"fifo.json"}
    assert health(server)["skills"]["loaded"] == 1


# --- 5. a 2,000-level tree -------------------------------------------------------------------------
def make_deep(root: Path, levels: int) -> None:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(levels):
        os.mkdir("d", dir_fd=fd)
        with open(os.open("f.txt", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "w") as handle:
            handle.write("needle\n")
        fd, old = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd), fd
        os.close(old)
    os.close(fd)


@pytest.mark.timeout(900)  # thousands of operations on a busy machine; a hang guard only
def test_a_2000_level_tree_gets_clear_errors_and_can_be_deleted(server: GhostServer, upstream: FakeUpstream,
                                                               sandbox: Path) -> None:
    (sandbox / "deep").mkdir()
    make_deep(sandbox / "deep", 2000)
    listed, searched = run_tools(server, upstream, [("list_files", {"path": "deep", "recursive": True}),
                                                    ("search_files", {"query": "needle"})])
    assert "nested more than 200 levels" in listed and "nested more than 200 levels" in searched
    saved = httpx.post(server.url + "/api/workspace/save", headers=server.headers, timeout=TIMEOUT)
    assert saved.status_code == 422 and "nested more than 200 levels" in saved.json()["error"]["message"]
    # A load swaps the deep tree out and removes it with the old sandbox.
    assert load(server, workspace_zip({"sandbox/fresh.txt": "x"})).status_code == 200
    assert not (sandbox / "deep").exists() and (sandbox / "fresh.txt").exists()
    (sandbox / "deep").mkdir()
    make_deep(sandbox / "deep", 2000)
    assert "deleted" in tool(server, upstream, "delete_file", path="deep", recursive=True)
    assert not (sandbox / "deep").exists()


# --- 6. over-limit scratchpads in archives ---------------------------------------------------------
@pytest.mark.parametrize("scratchpad", [
    {f"k{i}": i for i in range(51)},  # more entries than --scratchpad-max-entries 50
    {"big": "x" * 5000},  # a value larger than --scratchpad-max-value-bytes 4096
])
def test_an_archive_over_the_scratchpad_limits_is_refused_and_changes_nothing(
        server: GhostServer, upstream: FakeUpstream, sandbox: Path, scratchpad: dict[str, Any]) -> None:
    assert "saved" in tool(server, upstream, "scratchpad_set", key="mine", value="kept")
    (sandbox / "kept.txt").write_text("kept")
    response = load(server, workspace_zip({"sandbox/new.txt": "new"}, scratchpad))
    assert response.status_code == 413, response.text
    assert sorted(p.name for p in sandbox.iterdir()) == ["kept.txt"]
    assert "kept" in tool(server, upstream, "scratchpad_get", key="mine")


def test_an_archive_with_a_deeply_nested_session_is_refused(server: GhostServer, sandbox: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("session.json", '{"chat_history": [], "scratchpad": {"k": ' + DEEP_JSON + "}}")
    (sandbox / "kept.txt").write_text("kept")
    response = load(server, buffer.getvalue())
    assert response.status_code == 400 and "nested too deeply" in response.json()["error"]["message"]
    assert sorted(p.name for p in sandbox.iterdir()) == ["kept.txt"]


def test_ghost_starts_again_on_the_same_home(server: GhostServer, sandbox: Path) -> None:
    (sandbox / "deep").mkdir()
    make_deep(sandbox / "deep", 2000)
    plant_specials(sandbox / "acquired_skills")
    server.stop()
    server.start()
    assert health(server)["status"] in ("ok", "degraded")
