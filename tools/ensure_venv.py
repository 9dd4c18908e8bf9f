"""Build or update the project's virtualenv, one process at a time.

Every `make` target calls this first. Two targets started together on a fresh clone (the
README's `make run &` then `make token`) used to both create `.venv` and upgrade pip in it at
the same moment, and one died half-way through the other's install. Here the whole check-and-
install runs under an exclusive `fcntl` lock on a file beside the venv: the second caller waits,
then finds the venv built and the requirements installed, and does nothing.

A requirements set is (re)installed only when the hash of its files differs from the one
recorded in the venv after its last successful install. The venv's bundled pip is used as it is
(no self-upgrade: one network round trip fewer, and nothing replaces pip while it runs).

Usage: python tools/ensure_venv.py VENV REQUIREMENTS...
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path


def requirements_hash(files: list[Path]) -> str:
    """A hash of the requirement files' names and contents, following `-r` includes."""
    digest = hashlib.sha256()
    seen: set[Path] = set()
    pending = list(files)
    while pending:
        path = pending.pop(0).resolve()
        if path in seen:
            continue
        seen.add(path)
        text = path.read_text(encoding="utf-8")
        digest.update(path.name.encode() + b"\0" + text.encode() + b"\0")
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] in ("-r", "--requirement"):
                pending.append(path.parent / parts[1])
    return digest.hexdigest()


def stamp_path(venv_dir: Path, files: list[Path]) -> Path:
    key = hashlib.sha256("\0".join(sorted(str(f.resolve()) for f in files)).encode())
    return venv_dir / f".requirements-{key.hexdigest()[:12]}"


def ensure(venv_dir: Path, files: list[Path]) -> bool:
    """Create `venv_dir` when missing and install `files` when they changed; True when it did
    anything. Holds the lock for the whole check-and-install."""
    venv_dir = venv_dir.resolve()
    lock_path = venv_dir.with_name(venv_dir.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed (or we die)
        python = venv_dir / "bin" / "python"
        did = False
        if not python.exists():
            print(f"creating {venv_dir} with {sys.executable}", file=sys.stderr)
            venv.EnvBuilder(with_pip=True, clear=venv_dir.exists()).create(venv_dir)
            did = True
        stamp = stamp_path(venv_dir, files)
        wanted = requirements_hash(files)
        if not stamp.exists() or stamp.read_text(encoding="utf-8").strip() != wanted:
            names = " ".join(str(f) for f in files)
            print(f"installing {names} into {venv_dir}", file=sys.stderr)
            args = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
            for f in files:
                args += ["-r", str(f)]
            subprocess.run(args, check=True)  # noqa: S603 (our venv, our requirement files)
            for included in [files, *([f] for f in included_files(files))]:
                write_stamp(venv_dir, included)
            did = True
        return did


def included_files(files: list[Path]) -> list[Path]:
    """The files `files` pull in with `-r` (installing a set installs these too)."""
    found: list[Path] = []
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] in ("-r", "--requirement"):
                child = path.parent / parts[1]
                found += [child, *included_files([child])]
    return found


def write_stamp(venv_dir: Path, files: list[Path]) -> None:
    stamp = stamp_path(venv_dir, files)
    tmp = stamp.with_name(f"{stamp.name}.{os.getpid()}")
    tmp.write_text(requirements_hash(files) + "\n", encoding="utf-8")
    tmp.replace(stamp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ensure_venv", description=__doc__.split("\n\n")[0])
    parser.add_argument("venv", type=Path)
    parser.add_argument("requirements", type=Path, nargs="+")
    args = parser.parse_args(argv)
    try:
        ensure(args.venv, args.requirements)
    except subprocess.CalledProcessError as exc:
        print(f"ensure_venv: pip failed (exit {exc.returncode})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
