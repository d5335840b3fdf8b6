"""`netctl run` and `netctl exec` without click: the same options (runner/runopts.py), the same
requests, the same output and exit codes as the click commands, for the command lines that every
container start (and every exec) pays.

    main(argv) -> exit code, or None when the full CLI must handle the command line (help, an option
    this parser does not know, anything but run/exec and a warm `pull`): the caller then runs the full
    CLI as usual.

netctl/entry.py calls it before importing click, and runs the full CLI itself when it answers None:
the runner knows nothing of the front end above it.
"""

from __future__ import annotations

import sys

from libnetwork.errors import NetctlError


def split_globals(argv: list[str]) -> tuple[str | None, list[str]] | None:
    """(root, words) from `[--root DIR|--root=DIR] [--debug] WORDS`; None for other global flags."""
    root = None
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        arg = argv[i]
        if arg == "--root" and i + 1 < len(argv):
            root = argv[i + 1]
            i += 2
        elif arg.startswith("--root="):
            root = arg[len("--root="):]
            i += 1
        else:
            return None  # --debug wants tracebacks, --help wants click: the full CLI
    return root, argv[i:]


def main(argv: list[str]) -> int | None:
    parsed = split_globals(argv)
    if parsed is None:
        return None
    root, words = parsed
    if words[:1] == ["pull"] or words[:2] == ["image", "pull"]:
        return _pull_up_to_date(root, words[1:] if words[0] == "pull" else words[2:])
    if not words or words[0] not in ("run", "exec"):
        return None
    from runner import runopts

    table = runopts.RUN_OPTIONS if words[0] == "run" else runopts.EXEC_OPTIONS
    try:
        values, first, rest = runopts.parse_run(words[1:], table)
    except runopts.NotForUs:
        return None
    if words[0] == "exec" and not rest:
        return None  # a missing command: click's usage error
    try:
        if words[0] == "exec":
            return _exec(root, values, first, rest)
        return _run(root, values, first, rest)
    except NetctlError as err:
        sys.stderr.write(f"netctl: {err.message}\n")
        return err.exit_code
    except KeyboardInterrupt:
        return 130


def _run(root: str | None, values: dict, image: str, command: list[str]) -> int:
    from runner import client, runopts
    from runner.paths import Layout

    if values["publish"]:  # rare on the hot path: dataclasses and libnetwork's model
        import dataclasses

        values["publish"] = [dataclasses.asdict(runopts.parse_port(p)) for p in values["publish"]]
    request = runopts.build_request(values, image, command)
    layout = Layout.of(root)
    if values["pull"] != "never":  # one small file read when the image is present; the registry code only to pull
        from runner.registry.present import ensure_image

        ensure_image(layout, image, values["pull"] or "missing", values["platform"])
    sys.stdout.flush()
    container_id, code = client.run(
        layout, request, detach=values["detach"], interactive=values["interactive"], tty=values["tty"]
    )
    if values["detach"]:
        sys.stdout.write(container_id + "\n")
        sys.stdout.flush()
    return code


def _pull_up_to_date(root: str | None, args: list[str]) -> int | None:
    """`pull [-q] REF` of an image that is present and unchanged in its registry (runner/registry/
    quick.py: one HEAD, no requests, no click); None for everything else (the full CLI pulls)."""
    quiet = any(a in ("-q", "--quiet") for a in args)
    rest = [a for a in args if a not in ("-q", "--quiet")]
    if len(rest) != 1 or rest[0].startswith("-"):
        return None
    from runner.paths import Layout
    from runner.registry.quick import up_to_date

    found = up_to_date(Layout.of(root).images, rest[0])
    if found is None:
        return None
    ref, digest = found
    name = ref.familiar if ref.tag else f"{ref.familiar_name}@{digest}"
    if not quiet:
        sys.stdout.write(f"Digest: {digest}\nStatus: Image is up to date for {name}\n")
    sys.stdout.write(f"{ref}\n")
    sys.stdout.flush()
    return 0


def _exec(root: str | None, values: dict, ref: str, command: list[str]) -> int:
    from runner import execute, spec
    from runner.paths import Layout
    from runner.state import Records

    container = Records(Layout.of(root)).find(ref)
    sys.stdout.flush()
    return execute.exec_in(
        container,
        command,
        env=spec.parse_env(list(values["env"])),
        user=spec.parse_user(values["user"]) if values["user"] else "",
        workdir=spec.check_workdir(values["workdir"]),
        interactive=values["interactive"],
        tty=values["tty"],
    )
