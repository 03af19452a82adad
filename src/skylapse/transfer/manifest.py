"""A batch's manifest and the receiver's check and commit: step 3 of `skylapse.transfer.queue`.

A manifest lists the files of a batch in ``sha256sum`` format, one ``<SHA-256>  <path>`` line
per file, paths relative to the station's folder in the inbox (the paths rsync sent). One
``ssh`` command (:func:`receiver_script`) writes it from its stdin to
``.manifests/<batch>.sha256.part``, checks every file and, only if all of them match, renames
it to ``<batch>.sha256``: the commit that hands the batch to the processing side's ingest
(`skylapse.processing.ingest`, which never reads ``.part`` manifests). The same command hands
back the receiver's ``.resend`` list (frames its ingest quarantined after arrival).
:func:`read_answer` reads what it printed back: committed or not, the files that checked, the
paths to send again.

Pure: text in, text out; the transfer worker runs the command.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

MANIFEST_DIR = ".manifests"
#: Paths the receiver's ingest rejected after arrival (see `skylapse.processing.ingest`).
RESEND_FILE = ".resend"
#: The line the receiver prints once the manifest is committed.
COMMITTED_MARK = "SKYLAPSE-COMMITTED"
#: The line after which the receiver prints its ``.resend`` list.
RESEND_MARK = "SKYLAPSE-RESEND"
#: The receiver could not even store the manifest (a full disk): retryable, like rsync's 11.
_SETUP_FAILED = 11
#: Checks a ``sha256sum`` manifest on the receiver and prints what ``sha256sum -c`` prints.
#: Python's hashlib (OpenSSL, with the CPU's SHA extensions) hashes several times faster than
#: coreutils' ``sha256sum``, which would otherwise cost as much time as the transfer itself;
#: hosts without python3 fall back to ``sha256sum -c``. Each checked file is fsynced, and the
#: commit is synced, so a batch is acknowledged only once it is on the receiver's disk.
_PY_CHECK = (
    "import hashlib,os,sys\n"
    "bad=0\n"
    "for line in open(sys.argv[1]):\n"
    "    want,_,name=line.rstrip('\\n').partition('  ')\n"
    "    try:\n"
    "        h=hashlib.sha256()\n"
    "        with open(name,'rb') as f:\n"
    "            for block in iter(lambda: f.read(1<<20), b''): h.update(block)\n"
    "            os.fsync(f.fileno())\n"
    "        ok=h.hexdigest()==want\n"
    "    except OSError:\n"
    "        ok=False\n"
    "    bad+=not ok\n"
    "    print(name+(': OK' if ok else ': FAILED'))\n"
    "sys.exit(1 if bad else 0)\n"
)


def _check_manifest(part: str) -> str:
    """Shell that checks the manifest ``part``; its status is the check's."""
    return (
        f"if command -v python3 >/dev/null; then python3 -c {shlex.quote(_PY_CHECK)} {part};"
        f" else sha256sum -c {part}; fi"
    )


def manifest_text(files: Iterable[tuple[str, str]]) -> str:
    """The ``sha256sum`` manifest of (path, SHA-256) pairs."""
    return "".join(f"{sha}  {path}\n" for path, sha in files)


def receiver_script(remote_dir: str, batch_id: str) -> str:
    """The shell the receiver runs (in ``remote_dir``) to check and commit ``batch_id``.

    The manifest travels on its stdin, so an interrupted rsync never leaves one behind, and a
    failed check removes it. The command exits 0 once the check ran (it exits ``_SETUP_FAILED``
    when it could not store the manifest): the outcome is in its output, so ssh's own messages
    cannot hide it.
    """
    part = f"{MANIFEST_DIR}/{batch_id}.sha256.part"
    committed = f"{MANIFEST_DIR}/{batch_id}.sha256"
    return (
        f"cd {shlex.quote(remote_dir)} && mkdir -p {MANIFEST_DIR} && "
        f"cat > {part} || exit {_SETUP_FAILED}; "
        f"{{ {_check_manifest(part)}; }} 2>&1; rc=$?; "
        f"if [ $rc -eq 0 ]; then mv -f {part} {committed} && sync -f . &&"
        f" echo {COMMITTED_MARK}; else rm -f {part}; fi; "
        # frames the receiver's ingest rejected after arrival, to be sent again
        f"if [ -f {RESEND_FILE} ] && mv -f {RESEND_FILE} {RESEND_FILE}.reading; then"
        f" echo {RESEND_MARK}; cat {RESEND_FILE}.reading; rm -f {RESEND_FILE}.reading; fi; "
        "exit 0"
    )


@dataclass(frozen=True)
class ReceiverAnswer:
    """What :func:`receiver_script` printed: whether the manifest was committed, the paths
    whose check printed OK, and the paths the receiver asks to be sent again."""

    committed: bool
    ok: frozenset[str]
    resend: list[str]


def read_answer(out: str) -> ReceiverAnswer:
    """Read the output of :func:`receiver_script`."""
    checked, _, resend = out.partition(RESEND_MARK)
    lines = checked.splitlines()
    return ReceiverAnswer(
        committed=COMMITTED_MARK in lines,
        ok=frozenset(ln.rsplit(": ", 1)[0] for ln in lines if ln.endswith(": OK")),
        resend=resend.split(),
    )


def path_problem(path: str) -> str | None:
    """Why a frame's path cannot travel in a file list and a manifest line (None: it can)."""
    if any(ord(c) < 32 or ord(c) == 127 for c in path) or "\\" in path:
        return (
            f"file name {path!r} holds a control character or a backslash, which a manifest"
            " line cannot carry"
        )
    if not inside_buffer(path):
        return f"file name {path!r} points outside the buffer"
    return None


def inside_buffer(path: str) -> bool:
    """Whether a relative path stays inside the folder it is relative to."""
    parts = PurePosixPath(path).parts
    return bool(parts) and not path.startswith("/") and ".." not in parts
