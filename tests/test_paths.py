"""Sandbox paths: every shape of path a user or model can send (`split_relative`), and how the
fd-based file layer (`ghost.sandbox.fs`) resolves them: beneath the root, never through a link."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ghost.errors import PathOutsideSandbox, UnsafePath
from ghost.sandbox import fs
from ghost.sandbox.paths import MAX_NAME_BYTES, MAX_PATH_BYTES, split_relative


def resolve_in_sandbox(root: Path, user_path: str, *, allow_root: bool = False,
                       follow_final: bool = True) -> Path:
    """Open what `user_path` names through the file layer; the host path of what was opened.

    With `follow_final=False` only the way to the last component is opened (its folder's fd plus
    the name), as for deleting or moving a link itself.
    """
    parts = split_relative(user_path)
    if not parts and not allow_root:
        raise UnsafePath("path names the sandbox itself; give a file or folder inside it")
    with fs.open_root(root) as root_fd:
        if not parts:
            return _opened(os.dup(root_fd))
        try:
            parent = fs.open_dir(root_fd, parts[:-1], user_path=user_path)
        except FileNotFoundError:  # nothing there yet: where it would be made
            return Path(os.path.realpath(root)).joinpath(*parts)
        with fs.closing(parent):
            info = fs.lstat_at(parent, parts[-1])
            if not follow_final or info is None:
                return _opened(os.dup(parent)) / parts[-1]
            if os.path.isdir(f"/proc/self/fd/{parent}/{parts[-1]}") and not fs.is_link(parent, parts[-1]):
                return _opened(fs.open_dir(parent, [parts[-1]], user_path=user_path))
            return _opened(fs.open_regular(parent, parts[-1], user_path=user_path))


def _opened(fd: int) -> Path:
    with fs.closing(fd):
        return Path(os.readlink(f"/proc/self/fd/{fd}"))


def relative_name(root: Path, path: Path) -> str:
    return path.relative_to(Path(os.path.realpath(root))).as_posix()


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    (sandbox / "dir" / "sub").mkdir(parents=True)
    (sandbox / "dir" / "file.txt").write_text("inside")
    return sandbox


@pytest.fixture()
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "secret.txt").write_text("outside")
    return secret


@pytest.mark.parametrize("user_path, expected", [
    ("a.txt", "a.txt"),
    ("dir/file.txt", "dir/file.txt"),
    ("./dir/./file.txt", "dir/file.txt"),
    ("dir//sub/", "dir/sub"),
    ("...", "..."),
    ("..hidden", "..hidden"),
    ("a..b/c..", "a..b/c.."),
    ("~", "~"),
    ("C", "C"),
    ("with space/und ü.txt", "with space/und ü.txt"),
])
def test_plain_relative_paths_resolve_inside(root: Path, user_path: str, expected: str) -> None:
    resolved = resolve_in_sandbox(root, user_path)
    assert resolved == root / expected
    assert relative_name(root, resolved) == expected


@pytest.mark.parametrize("user_path", ["", ".", "./", "/", "./."])
def test_the_root_itself_needs_allow_root(root: Path, user_path: str) -> None:
    if user_path == "/":
        with pytest.raises(UnsafePath):
            resolve_in_sandbox(root, user_path, allow_root=True)
        return
    with pytest.raises(UnsafePath, match="sandbox itself"):
        resolve_in_sandbox(root, user_path)
    assert resolve_in_sandbox(root, user_path, allow_root=True) == root


@pytest.mark.parametrize("user_path", [
    "..", "../", "../x", "../../etc/passwd", "dir/../../x", "dir/..", "./..", "dir/./../file",
    "dir/sub/../../..", "a/../b",
])
def test_dot_dot_is_refused_in_any_position(root: Path, user_path: str) -> None:
    with pytest.raises(UnsafePath, match=r"'\.\.'"):
        resolve_in_sandbox(root, user_path)


@pytest.mark.parametrize("user_path", [
    "/etc/passwd", "//etc/passwd", "/", "/tmp", "C:/Windows", "c:x", "Z:",
])
def test_absolute_paths_and_drive_letters_are_refused(root: Path, user_path: str) -> None:
    with pytest.raises(UnsafePath) as info:
        resolve_in_sandbox(root, user_path)
    assert not isinstance(info.value, PathOutsideSandbox)  # malformed: 400, not 404


@pytest.mark.parametrize("user_path", ["a\\b", "..\\..\\etc", "\\etc\\passwd", "dir\\"])
def test_backslashes_are_refused(root: Path, user_path: str) -> None:
    with pytest.raises(UnsafePath, match="backslash"):
        resolve_in_sandbox(root, user_path)


@pytest.mark.parametrize("user_path", ["a\x00b", "\x00", "dir/file.txt\x00.png", "../\x00"])
def test_nul_bytes_are_refused(root: Path, user_path: str) -> None:
    with pytest.raises(UnsafePath, match="NUL"):
        resolve_in_sandbox(root, user_path)


@pytest.mark.parametrize("user_path", [None, 5, b"a.txt", ["a"], Path("a.txt")])
def test_non_strings_are_refused(root: Path, user_path: object) -> None:
    with pytest.raises(UnsafePath, match="string"):
        resolve_in_sandbox(root, user_path)  # type: ignore[arg-type]


def test_lone_surrogates_are_refused_not_crashed_on(root: Path) -> None:
    # JSON "\ud800" decodes to a lone surrogate that no file name can hold.
    with pytest.raises(UnsafePath, match="encoded"):
        resolve_in_sandbox(root, "a\ud800b")


def test_name_length_is_counted_in_bytes(root: Path) -> None:
    assert resolve_in_sandbox(root, "n" * MAX_NAME_BYTES).name == "n" * MAX_NAME_BYTES
    with pytest.raises(UnsafePath, match="component"):
        resolve_in_sandbox(root, "n" * (MAX_NAME_BYTES + 1))
    with pytest.raises(UnsafePath, match="component"):
        resolve_in_sandbox(root, "é" * 128)  # 128 characters, 256 bytes


def test_whole_path_length_is_bounded(root: Path) -> None:
    deep = "/".join(["d" * 200] * 20)  # every component fine, 4019 bytes in all
    assert len(deep.encode()) <= MAX_PATH_BYTES
    resolve_in_sandbox(root, deep)
    with pytest.raises(UnsafePath, match="longer than"):
        resolve_in_sandbox(root, deep + "/" + "d" * 100)
    with pytest.raises(UnsafePath, match="longer than"):
        resolve_in_sandbox(root, "/".join(["é" * 100] * 21))  # 2,120 characters, 4,220 bytes


def test_symlink_to_an_outside_directory_is_refused_at_any_depth(root: Path, outside: Path) -> None:
    os.symlink(outside, root / "dir" / "sub" / "escape")
    for user_path in ["dir/sub/escape", "dir/sub/escape/secret.txt", "dir/sub/escape/new/file",
                      "dir/sub/escape/"]:
        with pytest.raises(PathOutsideSandbox):
            resolve_in_sandbox(root, user_path)


def test_relative_symlink_climbing_out_is_refused(root: Path, outside: Path) -> None:
    os.symlink("../../outside/secret.txt", root / "dir" / "rel")
    assert (root / "dir" / "rel").read_text() == "outside"  # the link really does lead out
    with pytest.raises(PathOutsideSandbox):
        resolve_in_sandbox(root, "dir/rel")


def test_dangling_symlink_to_an_outside_path_is_refused(root: Path, outside: Path) -> None:
    # Writing through it would create a file outside.
    os.symlink(outside / "not-yet", root / "future")
    with pytest.raises(PathOutsideSandbox):
        resolve_in_sandbox(root, "future")


def test_a_chain_of_links_ending_outside_is_refused(root: Path, outside: Path) -> None:
    os.symlink(outside, root / "hop2")
    os.symlink("hop2", root / "hop1")
    os.symlink("dir/../hop1", root / "hop0")
    with pytest.raises(PathOutsideSandbox):
        resolve_in_sandbox(root, "hop0/secret.txt")


def test_link_to_the_parent_of_the_root_is_refused(root: Path) -> None:
    os.symlink("..", root / "up")
    with pytest.raises(PathOutsideSandbox):
        resolve_in_sandbox(root, "up")
    with pytest.raises(PathOutsideSandbox):
        resolve_in_sandbox(root, "up/sandbox/dir")  # back in, but by way of outside: still no


def test_symlinks_that_stay_inside_are_not_followed_but_keep_their_own_name(root: Path) -> None:
    # Ghost follows no link the sandbox made, even one that stays inside: whether it stays
    # inside can change the moment after it was checked. The link itself stays nameable.
    os.symlink("dir/file.txt", root / "alias")
    os.symlink(".", root / "self")
    with pytest.raises(fs.ThroughLink):
        resolve_in_sandbox(root, "alias")
    with pytest.raises(fs.ThroughLink):
        resolve_in_sandbox(root, "self/dir/file.txt")
    assert resolve_in_sandbox(root, "alias", follow_final=False) == root / "alias"


def test_symlink_loop_does_not_hang_or_crash(root: Path) -> None:
    os.symlink("loop-b", root / "loop-a")
    os.symlink("loop-a", root / "loop-b")
    with pytest.raises(fs.ThroughLink):
        resolve_in_sandbox(root, "loop-a")
    with pytest.raises(fs.ThroughLink):
        resolve_in_sandbox(root, "loop-a/x")


def test_a_root_reached_through_a_symlink_resolves_to_its_real_location(tmp_path: Path, root: Path) -> None:
    os.symlink(root, tmp_path / "via-link")  # the root is Ghost's configuration, not the sandbox's
    resolved = resolve_in_sandbox(tmp_path / "via-link", "dir/file.txt")
    assert resolved == root / "dir" / "file.txt"
    assert relative_name(tmp_path / "via-link", resolved) == "dir/file.txt"


@pytest.mark.parametrize("openat2", [True, False])
def test_both_resolvers_refuse_links_and_find_folders(root: Path, outside: Path, openat2: bool,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # openat2 where the kernel has it; the O_NOFOLLOW walk elsewhere: the same answers.
    monkeypatch.setattr(fs, "_openat2_usable", openat2 and fs._openat2_usable)
    os.symlink(outside, root / "dir" / "escape")
    os.symlink("sub", root / "dir" / "inner")
    with fs.open_root(root) as root_fd:
        with fs.closing(fs.open_dir(root_fd, ["dir", "sub"])) as fd:
            assert os.readlink(f"/proc/self/fd/{fd}") == str(root / "dir" / "sub")
        for parts in (["dir", "escape"], ["dir", "inner"], ["dir", "escape", "x"]):
            with pytest.raises(fs.ThroughLink):
                fs.open_dir(root_fd, parts, user_path="/".join(parts))
        with pytest.raises(FileNotFoundError):
            fs.open_dir(root_fd, ["dir", "missing"])
        with fs.closing(fs.open_dir(root_fd, ["new", "deeper"], create=True)):
            pass
        with pytest.raises(fs.ThroughLink):
            fs.open_dir(root_fd, ["dir", "escape", "made"], user_path="x", create=True)
    assert (root / "new" / "deeper").is_dir() and sorted(os.listdir(outside)) == ["secret.txt"]


def test_outside_error_is_a_404_and_malformed_is_a_400(root: Path, outside: Path) -> None:
    os.symlink(outside, root / "escape")
    with pytest.raises(PathOutsideSandbox) as outside_error:
        resolve_in_sandbox(root, "escape")
    with pytest.raises(UnsafePath) as malformed:
        resolve_in_sandbox(root, "../escape")
    assert outside_error.value.status_code == 404
    assert malformed.value.status_code == 400
    assert str(outside) not in outside_error.value.message  # never reveal where the link points


def test_a_path_too_long_once_joined_to_the_root_still_resolves_relative_to_its_fd(root: Path) -> None:
    name = "d" * MAX_NAME_BYTES
    fd = os.open(root, os.O_RDONLY)
    for _ in range(15):  # real directories, made relative to each other: the full path passes PATH_MAX
        os.mkdir(name, dir_fd=fd)
        fd, old = os.open(name, os.O_RDONLY, dir_fd=fd), fd
        os.close(old)
    os.close(fd)
    user_path = "/".join([name] * 16)
    assert len(user_path) <= MAX_PATH_BYTES < len(str(root)) + 1 + len(user_path)
    with fs.parent_of(root, user_path) as (folder, last):
        assert last == name and fs.lstat_at(folder, last) is None  # the 16th level is not there


def test_a_link_itself_can_be_named_without_following_it(root: Path, outside: Path) -> None:
    os.symlink(outside / "secret.txt", root / "dir" / "out-link")
    with pytest.raises(PathOutsideSandbox):
        resolve_in_sandbox(root, "dir/out-link")
    assert resolve_in_sandbox(root, "dir/out-link", follow_final=False) == root / "dir" / "out-link"
    # ...but only the last component: the way there is still checked.
    os.symlink(outside, root / "escape")
    with pytest.raises(PathOutsideSandbox):
        resolve_in_sandbox(root, "escape/secret.txt", follow_final=False)
    assert resolve_in_sandbox(root, "dir/file.txt", follow_final=False) == root / "dir" / "file.txt"
