"""Path safety and atomic publishing: the one place every pipeline asks where it may read and write.

The rules (docs/reliability.md):

* A name read from a file (a component in ``model_index.json``, a shard in an index's
  ``weight_map``, a file found in a folder) is a name, not a path: it is resolved inside its
  folder, symlinks included, and refused if it leaves it (:func:`path_inside`).
* An output never is, contains or lies inside an input (:func:`check_output_apart`).
* An existing output is replaced only with ``overwrite``; a folder only if an earlier arrowquant
  run wrote it (it holds :data:`OUTPUT_MARKER`), so ``--overwrite`` never deletes a user's folder.
* Outputs are written under a hidden ``.NAME.PID.partial`` beside the destination and published
  with one rename (a folder over an existing one with one atomic exchange), so an interruption at
  any point leaves the old output or the new one, never neither. Partials left by processes that
  died (SIGKILL, power loss) are removed the next time the same output is written.
* Copies of model folders keep symlinks that stay inside the model as symlinks, refuse those
  that leave it, and never follow a link to a directory (so a link loop cannot recurse).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import re
import shutil
import signal
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .errors import MissingFileError, ParameterError, UnsafePathError

# Written into every output folder arrowquant publishes: `overwrite` replaces only such folders.
OUTPUT_MARKER = ".arrowquant-output"


def _real(path: Path) -> str:
    return os.path.realpath(path)


def _is_within(path: str, folder: str) -> bool:
    """Both already resolved (realpath)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def path_inside(folder: Path, name: Any, what: str) -> Path:
    """``folder / name`` for a name read from a file, refused unless it stays inside ``folder``.

    ``name`` must be a relative path of plain parts (no ``..``, not absolute, no empty or NUL
    part), and the path it names, every symlink resolved, must lie inside ``folder`` resolved.
    ``what`` says where the name came from, for the error."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise UnsafePathError(f"{what}: {name!r} is not a file name")
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or os.path.isabs(name) or any(p in ("", ".", "..") for p in parts):
        raise UnsafePathError(f"{what}: {name!r} is not a plain name inside {folder} (absolute, empty or '..' "
                              "parts are refused)")
    path = Path(folder, *parts)
    if not _is_within(_real(path), _real(folder)):
        raise UnsafePathError(f"{what}: {name!r} is a symlink (or lies under one) that leads outside {folder}, "
                              f"to {_real(path)}; refusing to read it")
    return path


def open_input(path: Path, what: str):
    """``path`` opened for reading in binary; a missing file or a folder is one clear error."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise MissingFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ParameterError(f"{path}: is a directory, not {what}") from None


def check_output_apart(output: Path, inputs: Iterable[Path]) -> None:
    """Refuse an output that is an input, contains one, or (for an input folder) lies inside it."""
    out = _real(output)
    for source in inputs:
        src = _real(source)
        same = out == src or (output.exists() and source.exists() and os.path.samefile(output, source))
        if same:
            raise ParameterError(f"{output}: would overwrite the input {source}; choose another output (an input "
                                 "is never replaced)")
        if _is_within(src, out):
            raise ParameterError(f"{output}: contains the input {source}; choose an output outside it")
        if Path(src).is_dir() and _is_within(out, src):
            raise ParameterError(f"{output}: lies inside the input folder {source}; choose an output outside it")


def check_file_output(path: Path, overwrite: bool) -> None:
    """A file output: its folder exists, it is not a folder, and it exists only with ``overwrite``."""
    if not path.parent.is_dir():
        raise ParameterError(f"{path}: the output folder {path.parent} does not exist")
    if path.is_dir():
        raise ParameterError(f"{path}: is a directory; give a file path for the output")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise ParameterError(f"{path}: exists (pass overwrite=True (--overwrite) to replace it)")


def warn_extension(path: Path, expected: str, written: str) -> str | None:
    """A warning (also returned, for the CLI) when an output's name does not end in ``expected``."""
    if path.name.endswith(expected):
        return None
    message = f"{path}: writing {written}, but the name does not end in {expected}; other tools will misread it"
    warnings.warn(message, UserWarning, stacklevel=3)
    return message


# ----------------------------------------------------------------------------------------------
# Partial outputs: naming, and cleaning those of dead processes

def partial_path(path: Path) -> Path:
    return path.parent / f".{path.name}.{os.getpid()}.partial"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(path: Path) -> list[Path]:
    """Delete ``.NAME.PID.partial`` leftovers of ``path`` whose process no longer runs; returns them.

    ``.NAME.PID.old.partial`` is an earlier output moved aside by a publish that died before the
    new one took its place (only where RENAME_EXCHANGE is missing): it is moved back if ``path``
    is still missing, else deleted."""
    pattern = re.compile(r"\." + re.escape(path.name) + r"\.(\d+)(\.old)?\.partial")
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if not m or int(m.group(1)) == os.getpid() or _pid_alive(int(m.group(1))):
            continue
        stale = Path(entry.path)
        if m.group(2) and not (path.exists() or path.is_symlink()):
            os.rename(stale, path)
            warnings.warn(f"restored {path} from {stale}, left by an interrupted run", UserWarning, stacklevel=3)
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(stale, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        removed.append(stale)
    if removed:
        warnings.warn(f"removed {len(removed)} partial output(s) left by an interrupted run: "
                      + ", ".join(str(p) for p in removed), UserWarning, stacklevel=3)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# ----------------------------------------------------------------------------------------------
# Atomic publish

_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2
_AT_FDCWD = -100
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


def _rename2(source: Path, target: Path, flags: int) -> bool:
    """Linux renameat2; False where the system or file system does not support it."""
    if _renameat2 is None:
        return False
    result = _renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), flags)
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(target))


def publish(staging: Path, target: Path, overwrite: bool) -> None:
    """Move a complete ``staging`` file or folder onto ``target`` in one step.

    Without ``overwrite`` an existing target is never replaced, even one created meanwhile by
    another process. A folder replacing a folder is swapped atomically (RENAME_EXCHANGE), so no
    interruption can leave neither; the old one is then deleted."""
    if not overwrite:
        if _rename2(staging, target, _RENAME_NOREPLACE):
            return
        if target.exists() or target.is_symlink():
            raise ParameterError(f"{target}: exists (pass overwrite=True (--overwrite) to replace it)")
        os.rename(staging, target)
        return
    if staging.is_dir() and target.is_dir() and not target.is_symlink():
        if _rename2(staging, target, _RENAME_EXCHANGE):
            _remove(staging)  # now the old output
            return
        # No atomic exchange here: move the old one aside and the new one in, with Ctrl-C and
        # SIGTERM held until both renames are done and the old one deleted (an interrupt between them would leave no
        # output until a later run restored it); put the old one back if a rename fails.
        old = target.parent / f".{target.name}.{os.getpid()}.old.partial"
        with _interrupts_deferred():
            os.rename(target, old)
            try:
                os.rename(staging, target)
            except BaseException:
                os.rename(old, target)
                raise
            _remove(old)
        return
    os.replace(staging, target)


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM received inside the block are delivered when it ends, to the handlers
    in place before it. Only the main thread runs Python signal handlers, so elsewhere the block
    runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        if handler is not None:  # None: a handler installed from C, which Python cannot put back
            previous[signum] = handler
            signal.signal(signum, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            signal.raise_signal(received[0])


class atomic_file:
    """Context manager giving a hidden temporary path beside ``path``, published onto ``path`` on
    success (only over an existing file with ``overwrite``) and deleted on any failure, including
    KeyboardInterrupt and SIGTERM inside :func:`terminate_as_interrupt`."""

    def __init__(self, path: Any, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        check_file_output(self.path, overwrite)
        remove_stale_partials(self.path)
        self.tmp = partial_path(self.path)

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                publish(self.tmp, self.path, self.overwrite)
            except BaseException:
                _remove(self.tmp)
                raise
        else:
            _remove(self.tmp)


def prepare_output_folder(output: Path, overwrite: bool) -> Path:
    """Check a folder output and create its hidden staging folder; returns the staging folder.

    An existing non-empty output is replaced only with ``overwrite`` and only if an arrowquant run
    wrote it (it holds OUTPUT_MARKER): anything else is the user's, and is never deleted."""
    if not output.parent.is_dir():
        raise ParameterError(f"{output}: the output's parent folder {output.parent} does not exist")
    if output.is_symlink() or (output.exists() and not output.is_dir()):
        raise ParameterError(f"{output}: exists and is not a folder; choose a folder path for the output")
    if output.exists():
        entries = sorted(p.name for p in output.iterdir())
        if entries and not overwrite:
            raise ParameterError(f"{output}: exists and is not an empty folder (pass overwrite=True (--overwrite) to "
                                 "replace a folder an earlier arrowquant run wrote)")
        if entries and OUTPUT_MARKER not in entries:
            shown = ", ".join(entries[:5]) + (f", ... ({len(entries)} entries)" if len(entries) > 5 else "")
            raise ParameterError(f"{output}: was not written by arrowquant (no {OUTPUT_MARKER} in it), so overwrite "
                                 f"will not delete it; it holds {shown}. Remove it yourself or choose a new folder")
    remove_stale_partials(output)
    staging = partial_path(output)
    _remove(staging)
    staging.mkdir()
    (staging / OUTPUT_MARKER).write_text("This folder was written by arrowquant; `--overwrite` may replace it.\n")
    return staging


@contextlib.contextmanager
def output_folder(output: Path, overwrite: bool) -> Iterator[Path]:
    """Stage a folder output and publish it atomically when the block completes; on any failure
    (KeyboardInterrupt included) the staging folder is deleted and an old output stays."""
    staging = prepare_output_folder(output, overwrite)
    try:
        yield staging
        publish(staging, output, overwrite=output.exists())
    except BaseException:
        _remove(staging)
        raise


# ----------------------------------------------------------------------------------------------
# Copying model folders

def copy_model_files(source: Path, target: Path, skip: Callable[[Path], bool]) -> list[str]:
    """Copy every entry under ``source`` into ``target`` (an existing folder) except those ``skip``
    (given the path relative to ``source``) refuses. Symlinks that stay inside ``source`` are
    copied as symlinks (relative, so they still point inside the copy); symlinks that leave it
    are refused before anything is copied. Returns the relative paths copied."""
    root = _real(source)
    plan: list[tuple[str, os.DirEntry]] = []

    def walk(folder: str, rel: str) -> None:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            relative = f"{rel}{entry.name}"
            if skip(Path(relative)):
                continue
            if entry.is_symlink():
                resolved = _real(Path(entry.path))
                if _is_within(resolved, root) and skip(Path(os.path.relpath(resolved, root))):
                    continue  # a link to a file the copy leaves out (a weight file) would dangle
                if not _is_within(resolved, root):
                    raise UnsafePathError(f"{entry.path}: is a symlink to {os.readlink(entry.path)} that leads outside "
                                          f"the model folder {source}; refusing to copy it into the output (copy "
                                          "the model without links, e.g. `cp -rL`, if you mean to publish that file)")
                plan.append((relative, entry))
            elif entry.is_dir(follow_symlinks=False):
                plan.append((relative, entry))
                walk(entry.path, relative + "/")
            elif entry.is_file(follow_symlinks=False):
                plan.append((relative, entry))

    walk(str(source), "")
    copied = []
    for relative, entry in plan:
        destination = target / relative
        if entry.is_symlink():
            resolved = _real(Path(entry.path))
            link_to = os.path.relpath(resolved, _real(Path(entry.path).parent))
            os.symlink(link_to, destination)
        elif entry.is_dir(follow_symlinks=False):
            destination.mkdir(exist_ok=True)
        else:
            shutil.copy2(entry.path, destination, follow_symlinks=False)
        copied.append(relative)
    return copied


# ----------------------------------------------------------------------------------------------
# SIGTERM

class Terminated(KeyboardInterrupt):
    """SIGTERM received (kill, timeout, a cancelled CI job, docker stop): unwinds like Ctrl-C so
    every partial output is removed."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated(f"terminated by signal {signum}")


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM unwinds like KeyboardInterrupt, if this is the main thread and
    nobody else handles SIGTERM (a host application's own handler is left alone)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
