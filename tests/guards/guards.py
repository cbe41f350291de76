"""The guards that `run.py` takes out one at a time, and the tests that must notice each removal.

Each entry is one small edit to Ghost's source that removes or weakens one guard: the file (below
`src/ghost/`), the exact original snippet (it must occur exactly once, or the run stops and says
so), its replacement, and the pytest node ids that must fail without the guard.

To add a guard: append a `Removal` to `GUARDS` next to its neighbours, e.g.

    Removal("proxy: target check", "api/proxy/target.py",
            old="<the exact lines that refuse a foreign target>", new="<the same lines, disarmed>",
            tests=("tests/test_proxy.py::test_...",), why="forwards to any host the client names"),

then `python tests/guards/run.py -k "target check"`; when it reports "noticed", run the whole check
(`make guards`) and paste its table into docs/security.md. Keep the edit minimal (a condition made
`False`, a flag left out) so that it removes this guard and nothing else.

`PROOFS` is the same mechanism for behaviours that are not security guards: it breaks what each of
the tests fixed in issue 17 checks, to show those tests can fail (`run.py --proofs`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Removal:
    name: str  # the guard, as the report names it
    file: str  # below src/ghost/
    old: str  # exact snippet, found exactly once
    new: str  # what replaces it
    tests: tuple[str, ...]  # pytest node ids that must fail without the guard
    why: str = ""  # what the edit does, for the report
    # Further edits (file, old, new) made together with this one, for a guard kept in two places
    also: tuple[tuple[str, str, str], ...] = ()

    def edits(self) -> list[tuple[str, str, str]]:
        return [(self.file, self.old, self.new), *self.also]


PATHS = "tests/test_paths.py"
ARCHIVE = "tests/test_workspace_archive.py"
BAD_ARCHIVES = f"{ARCHIVE}::test_bad_archive_is_refused_and_the_workspace_is_unchanged"
SANDBOX = "tests/test_sandbox.py"
BOUNDARY = "tests/test_sandbox_boundary.py"

GUARDS: list[Removal] = [
    # --- safe-path resolution (sandbox/paths.py) ----------------------------------------------------
    Removal("paths: `..` refused", "sandbox/paths.py",
            old='    if ".." in parts:\n', new='    if False:\n',
            tests=(f"{PATHS}::test_dot_dot_is_refused_in_any_position",), why="`..` components accepted"),
    Removal("paths: absolute and drive-letter paths refused", "sandbox/paths.py",
            old='    if user_path.startswith("/") or _DRIVE.match(user_path):\n', new="    if False:\n",
            tests=(f"{PATHS}::test_absolute_paths_and_drive_letters_are_refused",), why="absolute paths accepted"),
    Removal("paths: backslashes refused", "sandbox/paths.py",
            old='    if "\\\\" in user_path:\n', new="    if False:\n",
            tests=(f"{PATHS}::test_backslashes_are_refused",), why="backslashes accepted"),
    Removal("paths: NUL refused", "sandbox/paths.py",
            old='    if "\\x00" in user_path:\n', new="    if False:\n",
            tests=(f"{PATHS}::test_nul_bytes_are_refused",), why="NUL bytes accepted"),
    Removal("paths: name length bounded", "sandbox/paths.py",
            old="        if len(os.fsencode(part)) > MAX_NAME_BYTES:\n", new="        if False:\n",
            tests=(f"{PATHS}::test_name_length_is_counted_in_bytes",), why="over-long names accepted"),
    # --- the fd-based file layer (sandbox/fs.py, fswalk.py, fspool.py) --------------------------------
    Removal("fs: openat2 stays beneath the root and follows no link", "sandbox/fs.py",
            old="_RESOLVE = _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS\n",
            new="_RESOLVE = _RESOLVE_NO_MAGICLINKS\n",
            tests=(f"{PATHS}::test_symlink_to_an_outside_directory_is_refused_at_any_depth",
                   f"{PATHS}::test_a_chain_of_links_ending_outside_is_refused",
                   f"{PATHS}::test_link_to_the_parent_of_the_root_is_refused"),
            why="openat2 resolves links anywhere (no RESOLVE_BENEATH, no RESOLVE_NO_SYMLINKS)"),
    # RESOLVE_BENEATH alone cannot be noticed while RESOLVE_NO_SYMLINKS stays: `..` is refused by
    # the path rules, so only a link could lead out, and no link is followed. Defence in depth.
    Removal("fs: openat2 follows no link, even one that stays inside", "sandbox/fs.py",
            old="_RESOLVE = _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS\n",
            new="_RESOLVE = _RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS\n",
            tests=(f"{PATHS}::test_symlinks_that_stay_inside_are_not_followed_but_keep_their_own_name",),
            why="links followed while they stay beneath the root (where they lead can change the next moment)"),
    Removal("fs: the walk fallback opens each folder O_NOFOLLOW", "sandbox/fs.py",
            old="    try:\n        return os.open(name, DIR_FLAGS, dir_fd=fd)\n    except FileNotFoundError:\n",
            new="    try:\n        return os.open(name, DIR_FLAGS & ~os.O_NOFOLLOW, dir_fd=fd)\n    except FileNotFoundError:\n",
            tests=(f"{PATHS}::test_both_resolvers_refuse_links_and_find_folders[False]",),
            why="where openat2 is missing, the component walk follows links"),
    Removal("fs: the last component opened O_NOFOLLOW", "sandbox/fs.py",
            old="        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)\n",
            new="        fd = os.open(name, (flags | os.O_NONBLOCK | os.O_CLOEXEC) & ~os.O_NOFOLLOW, 0o644, dir_fd=dir_fd)\n",
            tests=(f"{PATHS}::test_a_link_itself_can_be_named_without_following_it",),
            why="a file that is a link is opened through the link"),
    Removal("fs: only regular files read or written (S_ISREG on the fd)", "sandbox/fs.py",
            old="    if not stat.S_ISREG(os.fstat(fd).st_mode):\n        os.close(fd)\n",
            new="    if False:\n        os.close(fd)\n",
            tests=(f"{BOUNDARY}::test_fifos_and_devices_never_hang_a_tool",
                   f"{BOUNDARY}::test_fifos_never_hang_download_upload_or_save"),
            why="FIFOs and devices opened as files"),
    Removal("fs: temp files are new files with random names", "sandbox/fs.py",
            old='        name = f"{prefix}{secrets.token_hex(8)}{suffix}"\n        try:\n'
                "            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,\n",
            new='        name = f"{prefix}{suffix}"\n        try:\n'
                "            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,\n",
            tests=(f"{BOUNDARY}::test_a_sidecar_temp_name_linked_outside_writes_nothing_there",),
            why="a predictable temp name opened as found (no O_EXCL, no O_NOFOLLOW): a planted link is written through"),
    Removal("fs: walks stop at a depth limit", "sandbox/fswalk.py",
            old="    if depth >= max_depth:\n        raise fs.too_deep(max_depth)\n",
            new="    if False:\n        raise fs.too_deep(max_depth)\n",
            tests=(f"{BOUNDARY}::test_a_2000_level_tree_gets_clear_errors_and_can_be_deleted",),
            why="list, search and save walk any depth"),
    Removal("fs: file work on its own bounded pool", "sandbox/fspool.py",
            old="    return await asyncio.get_running_loop().run_in_executor(_pool, functools.partial(fn, *args))\n",
            new="    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))\n",
            tests=("tests/test_fspool.py::test_file_work_runs_while_the_default_pool_is_busy",),
            why="file work shares the event loop's default pool"),
    # --- sandbox-controlled data at start and after a load (tools/skill_store.py, workspace/archive.py)
    Removal("skills: sidecar size capped", "tools/skill_store.py",
            old="            text = fs.read_capped(fd, MAX_SIDECAR_BYTES).decode(\"utf-8\")\n",
            new="            text = fs.read_capped(fd, 1 << 40).decode(\"utf-8\")\n",
            tests=(f"{BOUNDARY}::test_bad_sidecars_written_by_the_model_are_skipped_not_fatal",),
            why="a sidecar of any size read and loaded"),
    Removal("skills: sidecar depth checked before parsing", "tools/skill_store.py",
            old="        if json_depth(text, MAX_SIDECAR_DEPTH) > MAX_SIDECAR_DEPTH:\n",
            new="        if False:\n",
            tests=(f"{BOUNDARY}::test_bad_sidecars_written_by_the_model_are_skipped_not_fatal",),
            why="a 3,000-level sidecar handed to json.loads"),
    Removal("load: the archive's scratchpad within the scratchpad's limits", "workspace/archive.py",
            old="        _check_scratchpad(workspace, staged)\n",
            new="",
            tests=(f"{BOUNDARY}::test_an_archive_over_the_scratchpad_limits_is_refused_and_changes_nothing",),
            why="a restored scratchpad skips the entry count and value size limits"),
    # --- auth (api/auth.py, config.py) --------------------------------------------------------------
    Removal("auth: the key is checked", "api/auth.py",
            old="    if any(matched):\n        return\n", new="    return\n",
            tests=("tests/test_auth.py::test_authed_route_rejects_bad_credentials",), why="every request let in"),
    Removal("auth: the key compare", "api/auth.py",
            old='    return hmac.compare_digest(supplied.encode("latin-1", "replace"), expected.encode("utf-8"))\n',
            new='    return bool(supplied)\n',
            tests=("tests/test_auth.py::test_authed_route_rejects_bad_credentials",), why="any key matches"),
    Removal("auth: no public bind with a weak key", "config.py",
            old="        if weak and not self.bind_is_loopback() and not self.insecure:\n",
            new="        if False:\n",
            tests=("tests/test_auth.py::test_refuses_public_bind_with_weak_key",), why="public bind with the default key starts"),
    # --- the workspace archive checks (workspace/zipcheck.py, workspace/stage.py) -------------------
    Removal("zip: entry names follow the path rules", "workspace/zipcheck.py",
            old="        parts = tuple(split_relative(name))\n",
            new='        parts = tuple(p for p in name.split("/") if p not in ("", "."))\n',
            tests=(BAD_ARCHIVES,), why="`../x`, `/etc/x`, backslash names accepted"),
    Removal("zip: links and special files refused", "workspace/zipcheck.py",
            old="    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):\n", new="    if False:\n",
            tests=(BAD_ARCHIVES,), why="symlink and FIFO entries accepted"),
    Removal("zip: encrypted entries refused", "workspace/zipcheck.py",
            old="    if info.flag_bits & _ENCRYPTED:\n", new="    if False:\n",
            tests=(BAD_ARCHIVES,), why="encrypted entries accepted"),
    Removal("zip: duplicates and file/folder clashes refused", "workspace/zipcheck.py",
            old="        if key in files or (not entry.is_dir and key in folders):\n", new="        if False:\n",
            tests=(BAD_ARCHIVES,), why="a name twice accepted"),
    Removal("zip: entry count from the central directory", "workspace/zipcheck.py",
            old="        if count > max_entries:\n", new="        if False:\n",
            tests=(BAD_ARCHIVES,), why="records not counted before zipfile parses them"),
    Removal("zip: declared sizes capped", "workspace/zipcheck.py",
            old="    if declared > limits.max_unpacked_bytes:\n", new="    if False:\n",
            tests=(BAD_ARCHIVES,), why="declared size not checked before unpacking"),
    # Not listed: counting the real unpacked bytes (workspace/stage.py `_Budget`). zipfile stops
    # every entry at its declared size (and fails its CRC), and the declared sizes are capped
    # above, so no archive can get past the declared-size check and then unpack more: the count
    # is defence in depth that no test can tell apart while the check above is in place.
    # --- the sandbox (sandbox/layout.py, env.py, supervise.py, rlimits.py) --------------------------
    # `--unshare-uts` stays: `--hostname` needs it, and without it bubblewrap refuses to start,
    # which would fail the tests for a reason other than the shared namespaces.
    Removal("sandbox: own namespaces (--unshare-all)", "sandbox/layout.py",
            old='        args = ["--unshare-all", "--unshare-user", ', new='        args = ["--unshare-uts", "--unshare-user", ',
            tests=(f"{SANDBOX}::test_other_processes_are_invisible", f"{SANDBOX}::test_no_network_not_even_loopback"),
            why="host PID, network, IPC namespaces shared"),
    Removal("sandbox: no network", "sandbox/layout.py",
            old="        if self.network:\n", new="        if True:\n",
            tests=(f"{SANDBOX}::test_no_network_not_even_loopback",), why="`--share-net` always"),
    Removal("sandbox: no capabilities", "sandbox/layout.py",
            old='"--new-session", "--cap-drop", "ALL", ', new='"--new-session", ',
            tests=(f"{SANDBOX}::test_no_capabilities_and_no_new_user_namespaces",), why="capabilities kept"),
    Removal("sandbox: system mounted read-only", "sandbox/layout.py",
            old='            args += ["--ro-bind", str(source), target]\n',
            new='            args += ["--bind", str(source), target]\n',
            tests=(f"{SANDBOX}::test_writing_outside_the_sandbox_fails",), why="system folders writable"),
    Removal("sandbox: its root read-only", "sandbox/layout.py",
            old='"--remount-ro", "/", "--clearenv"]', new='"--clearenv"]',
            tests=(f"{SANDBOX}::test_writing_outside_the_sandbox_fails",), why="`/` of the sandbox writable"),
    # One guard kept in two places: bubblewrap is started with an environment of PATH alone
    # (launch.py), and clears even that for the sandbox (--clearenv). Either alone keeps Ghost's
    # environment out, so the entry removes both.
    Removal("sandbox: the sandbox gets no environment of Ghost's", "sandbox/layout.py",
            old='"--remount-ro", "/", "--clearenv"]', new='"--remount-ro", "/"]',
            also=(("sandbox/launch.py", 'start_new_session=True, env={"PATH": "/usr/bin:/bin"}, cwd="/")',
                   'start_new_session=True, cwd="/")'),),
            tests=(f"{SANDBOX}::test_ghost_key_and_settings_do_not_reach_the_environment",),
            why="`--clearenv` left out and bubblewrap started with Ghost's environment"),
    Removal("sandbox: Ghost's home masked", "sandbox/layout.py",
            old='        return [*self._if_known("--size", "4096"), "--tmpfs", str(hidden)] if mounted_over else []\n',
            new="        return []\n",
            tests=(f"{SANDBOX}::test_ghost_home_under_a_mounted_directory_is_masked",),
            why="a home under a mounted folder visible"),
    Removal("sandbox: Ghost's home never mounted", "sandbox/layout.py",
            old='        args += ["--bind", str(self.sandbox_root), SANDBOX_MOUNT,',
            new='        args += ["--ro-bind", str(self.hidden), str(self.hidden), "--bind", str(self.sandbox_root), SANDBOX_MOUNT,',
            tests=(f"{SANDBOX}::test_ghosts_database_is_not_visible",
                   "tests/test_sandbox_server.py::test_ghost_keeps_serving_while_the_model_abuses_the_sandbox"),
            why="the home mounted read-only at its host path"),
    Removal("sandbox: dies with Ghost", "sandbox/layout.py",
            old='"--disable-userns"), "--die-with-parent",', new='"--disable-userns"),',
            tests=("tests/test_sandbox_server.py::test_sandboxes_die_with_ghost",),
            why="`--die-with-parent` left out"),
    Removal("sandbox: output cut", "sandbox/supervise.py",
            old="        self.stdout = CappedBuffer(self.limits.output_bytes)\n",
            new="        self.stdout = CappedBuffer(1 << 40)\n",
            tests=(f"{SANDBOX}::test_long_output_keeps_head_and_tail",), why="stdout kept whole"),
    Removal("sandbox: output flood killed", "sandbox/supervise.py",
            old="        if self.stdout.total + self.stderr.total >= self.limits.output_kill_bytes:\n",
            new="        if False:\n",
            tests=(f"{SANDBOX}::test_100_mb_of_stdout_is_cut_and_the_flood_killed",), why="a flood runs on"),
    Removal("sandbox: wall-clock limit", "sandbox/supervise.py",
            old="    done, _ = await asyncio.wait({exited, flooded}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)\n",
            new="    done, _ = await asyncio.wait({exited, flooded}, timeout=None, return_when=asyncio.FIRST_COMPLETED)\n",
            tests=(f"{SANDBOX}::test_infinite_loop_is_killed_at_the_timeout",), why="no timeout"),
    Removal("sandbox: memory limit", "sandbox/rlimits.py",
            old="        (resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes)),\n", new="",
            tests=(f"{SANDBOX}::test_memory_hog_gets_memory_error",), why="RLIMIT_AS not set"),
    Removal("sandbox: file size limit", "sandbox/rlimits.py",
            old="        (resource.RLIMIT_FSIZE, (limits.file_size_bytes, limits.file_size_bytes)),\n", new="",
            tests=(f"{SANDBOX}::test_file_size_limit",), why="RLIMIT_FSIZE not set"),
    Removal("sandbox: CPU limit", "sandbox/rlimits.py",
            old="        (resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1)),\n", new="",
            tests=(f"{SANDBOX}::test_cpu_limit",), why="RLIMIT_CPU not set"),
    Removal("sandbox: open-files limit", "sandbox/rlimits.py",
            old="        (resource.RLIMIT_NOFILE, (limits.max_open_files, limits.max_open_files)),\n", new="",
            tests=("tests/test_settings_e2e.py::test_sandbox_max_open_files_bounds_a_run",), why="RLIMIT_NOFILE not set"),
    # --- HTTP boundary (api/middleware.py, api/proxy/) ----------------------------------------------
    Removal("body limit: declared length", "api/middleware.py",
            old="        if declared is not None and declared > limit:\n", new="        if False:\n",
            tests=("tests/test_body_limits.py::test_declared_length_over_the_limit_is_413_before_the_body",),
            why="a declared over-long body is read until the count trips"),
    Removal("body limit: streamed bytes", "api/middleware.py",
            old="            if seen > limit:\n", new="            if False:\n",
            tests=("tests/test_errors.py::test_json_body_over_the_limit_is_413_declared_or_chunked",
                   "tests/test_proxy.py::test_chunked_body_far_over_the_limit_is_413"),
            why="a chunked body is read whole"),
    Removal("body limit: uploads", "api/receive.py",
            old="        if self.size > self.cap:\n", new="        if False:\n",
            tests=("tests/test_upload.py::test_upload_at_the_cap_passes_and_one_byte_more_is_413_leaving_nothing",),
            why="uploads not capped"),
    Removal("size limit: workspace save", "workspace/build.py",
            old="        if self.raw.tell() + len(data) > self.cap:\n", new="        if False:\n",
            tests=(f"{ARCHIVE}::test_save_over_the_cap_is_413_and_leaves_no_temp_file",), why="archives not capped"),
    Removal("proxy: the client's key never forwarded", "api/proxy/headers.py",
            old='_REQUEST_DROP = _HOP_BY_HOP | {b"host", b"x-ghost-key", b"authorization", b"x-request-id", b"expect"}',
            new='_REQUEST_DROP = _HOP_BY_HOP | {b"host", b"x-request-id", b"expect"}',
            tests=("tests/test_proxy.py::test_ghost_key_is_never_forwarded",), why="X-Ghost-Key and Authorization forwarded"),
    Removal("proxy: origin-form targets only", "api/proxy/target.py",
            old="    if not is_origin_form(text):\n", new="    if False:\n",
            tests=("tests/test_boundary.py::test_odd_request_targets_never_reach_another_host",),
            why="`*`, `//host/x` and other target forms go on (the host/port check behind it is a second "
                "line, not listed: it cannot be reached while this one stands)"),
    Removal("boundary: foreign Host refused", "api/boundary.py",
            old="        if host is not None and not self.hosts.allows(split_host(host)):\n", new="        if False:\n",
            tests=("tests/test_boundary.py::test_foreign_host_is_403_on_every_route",), why="DNS rebinding reaches Ghost"),
    Removal("boundary: foreign Origin refused", "api/boundary.py",
            old="        if origin is not None and not self.origins.allows(origin):\n", new="        if False:\n",
            tests=("tests/test_boundary.py::test_foreign_simple_request_is_refused_not_run",),
            why="a page's text/plain POST runs"),
    Removal("boundary: JSON depth", "api/deps.py",
            old="    if deep:\n", new="    if False:\n",
            tests=("tests/test_boundary.py::test_deep_json_is_400_on_every_json_route",), why="deep JSON parsed"),
    Removal("upstream: reply text bounded", "llm/chat.py",
            old="        if self.text_chars > self.bounds.reply_chars:\n", new="        if False:\n",
            tests=("tests/test_boundary.py::test_upstream_floods_are_cut_off_with_memory_bounded",),
            why="150 MB of content relayed and held"),
    Removal("upstream: one SSE event's data bounded", "sse.py",
            old="        if self.max_data is not None and self._data_bytes > self.max_data:\n", new="        if False:\n",
            tests=("tests/test_boundary.py::test_upstream_floods_are_cut_off_with_memory_bounded",
                   "tests/test_sse.py::test_one_events_data_is_bounded_across_its_lines"),
            why="150 MB of short `data:` lines collected into one event"),
    Removal("boundary: unauthenticated routes take small bodies", "app.py",
            old="    return {path: limit for path in UNAUTHENTICATED_PATHS}\n",
            new="    return {}\n",
            tests=("tests/test_boundary.py::test_unauthenticated_routes_take_only_small_bodies",
                   "tests/test_boundary.py::test_unauthenticated_body_without_a_length_is_counted"),
            why="routes without auth read bodies up to the general limit"),
    Removal("auth: the generated key is strong", "keyfile.py",
            old="    key = secrets.token_urlsafe(KEY_BYTES)\n", new="    key = secrets.token_urlsafe(8)\n",
            tests=("tests/test_boundary.py::test_first_start_generates_a_private_key_that_clients_find",),
            why="an 8-byte key generated"),
    Removal("sandbox: one memory limit for a run's processes together (cgroup)", "sandbox/cgroup.py",
            old="                limit_memory(group.memory_path, memory_bytes)\n", new="                pass\n",
            tests=("tests/test_boundary.py::test_one_run_forking_large_processes_is_limited_as_a_whole",),
            why="the run's memory group gets no limit: each process only has its own RLIMIT_AS"),
    Removal("slow clients: a deadline for the request head", "api/slowclients.py",
            old="            self._head_deadline = self.loop.call_later(self.head_timeout, self._head_too_slow)\n",
            new="            self._head_deadline = None\n",
            tests=("tests/test_boundary.py::test_slow_header_client_is_disconnected",),
            why="a client sending its headers a byte at a time holds the connection forever"),
    # --- a misbehaving model (tools/registry.py, agent/turn.py) -------------------------------------
    Removal("model: tool results bounded", "tools/registry.py",
            old="        if len(result.content) <= limit:\n", new="        if True:\n",
            tests=("tests/test_tools.py::test_results_are_bounded",), why="results passed whole"),
    Removal("model: tool rounds bounded", "agent/turn.py",
            old="        limit = self.options.max_tool_rounds\n", new="        limit = self.options.max_tool_rounds + 5\n",
            tests=("tests/test_agent_turn.py::test_round_limit_stops_a_model_that_never_stops",),
            why="five rounds more than allowed"),
]


PROOFS: list[Removal] = [
    Removal("sandbox probe: Ghost's home visible", "sandbox/layout.py",
            old='        args += ["--bind", str(self.sandbox_root), SANDBOX_MOUNT,',
            new='        args += ["--ro-bind", str(self.hidden), str(self.hidden), "--bind", str(self.sandbox_root), SANDBOX_MOUNT,',
            tests=("tests/test_sandbox_server.py::test_ghost_keeps_serving_while_the_model_abuses_the_sandbox",),
            why="the home mounted read-only at its host path"),
    Removal("sandbox probe: other processes visible", "sandbox/layout.py",
            old='        args = ["--unshare-all", "--unshare-user", ',
            new='        args = ["--unshare-user", "--unshare-uts", "--unshare-net", "--unshare-ipc", ',
            tests=("tests/test_sandbox_server.py::test_ghost_keeps_serving_while_the_model_abuses_the_sandbox",),
            why="the host's PID namespace shared: Ghost's command line (with its key) readable"),
    Removal("disconnect: execute never starts the process", "tools/execute.py",
            old='        result = await self.executor.run([interpreter, "-c", code])\n',
            new='        result = await self.executor.run([interpreter, "-c", "true"])\n',
            tests=("tests/test_agent_turn.py::test_disconnect_kills_a_long_execute",),
            why="the process the test waits to see killed is never started"),
    Removal("disconnect: the turn runs on after the client left", "api/chat_reply.py",
            old="    turn = await unless_disconnected(request.receive, _collect(events, info.show_activity))\n",
            new="    turn = await _collect(events, info.show_activity)\n",
            tests=("tests/test_agent_turn.py::test_disconnect_kills_a_long_execute",),
            why="a non-streamed turn is not cancelled when its client hangs up"),
    Removal("load: the sandbox swapped file by file", "workspace/archive.py",
            old="        journal.exchange(live, staged.sandbox)\n",
            new="        shutil.rmtree(live); os.rename(staged.sandbox, live)\n",
            tests=("tests/test_faults.py::test_sigkill_during_a_workspace_load_leaves_the_old_or_the_new_workspace[swapping]",),
            why="old sandbox deleted, then the new one renamed in"),
    Removal("load: unpacked straight into the live sandbox", "workspace/archive.py",
            old='    stage_root = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="stage-", dir=scratch))\n',
            new='    stage_root = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="stage-", dir=workspace.sandbox_root))\n',
            tests=("tests/test_faults.py::test_sigkill_during_a_workspace_load_leaves_the_old_or_the_new_workspace[unpacking]",),
            why="staging inside the live sandbox"),
    Removal("chat: turns serialised", "agent/service.py",
            old="        async with self.limiter.slot(), self.gate.turn():\n",
            new='        async with self.__dict__.setdefault("serial", __import__("asyncio").Lock()), '
                "self.limiter.slot(), self.gate.turn():\n",
            tests=("tests/test_chat.py::test_concurrent_turns_are_independent",), why="one turn at a time"),
    Removal("chat: the stream held back until the turn ends", "api/chat_reply.py",
            old="        async for batch in batches:\n            if data := b\"\".join(map(encode, batch)):\n",
            new="        for batch in [[event async for batch in batches for event in batch]]:\n"
                "            if data := b\"\".join(map(encode, batch)):\n",
            tests=("tests/test_chat.py::test_first_chunk_arrives_before_upstream_finishes",),
            why="all events collected before the first byte"),
    Removal("shutdown: no grace for running turns", "cli.py",
            old="timeout_graceful_shutdown=settings.shutdown_grace_seconds,",
            new="timeout_graceful_shutdown=0.01,",
            tests=("tests/test_shutdown.py::test_sigterm_lets_a_running_turn_finish",), why="turns cut at SIGTERM"),
    Removal("load: does not wait for running turns", "workspace/gate.py",
            old="                    await self._no_readers.wait()\n", new="                    pass\n",
            tests=("tests/test_workspace_turns.py::test_load_waits_for_a_running_turn_then_swaps",),
            why="the load swaps under a running turn"),
    Removal("save: the archive built on the event loop", "workspace/tasks.py",
            old="        return await fspool.run(fn, stop)\n", new="        return fn(stop)\n",
            tests=(f"{ARCHIVE}::test_the_event_loop_stays_free_while_a_large_save_runs",),
            why="blocking work on the loop"),
]
