"""A local AWS endpoint for the engine's `--target aws` tests: moto's server
behind a fault-injecting proxy, driven by JSON lines on stdin.

    python3 tests/aws_endpoint/harness.py

starts moto (a child process, killed with the harness whatever happens)
and the proxy (in this process), prints one line

    {"endpoint": "http://127.0.0.1:PROXY_PORT", "moto": "http://127.0.0.1:MOTO_PORT"}

then answers each command line on stdin with one JSON line on stdout, until
stdin ends or SIGTERM/SIGINT. README.md beside it lists the commands.

If it cannot start it prints {"error": "..."} instead and exits 1.

Environment: S3_UPLOAD_PART_MIN_SIZE (default 5 bytes, so that tests can
upload multipart with small parts), AWS_ENDPOINT_MOTO_LOG (a file for
moto's output, else a discarded temporary file), AWS_ENDPOINT_VERBOSE=1
(the proxy logs each request on stderr). An inherited MOTO_PORT is not
passed on: moto gets its own port there, which its Step Functions
interpreter calls.
"""

import ctypes
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fault_proxy import CommandError, FaultProxy  # noqa: E402

HOST = "127.0.0.1"
PR_SET_PDEATHSIG = 1
MOTO_START_TIMEOUT = 60.0


class Stop(Exception):
    """SIGTERM or SIGINT: stop as at the end of stdin."""


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _die_with_parent_fn():
    """A preexec_fn making the child get SIGKILL when this process dies,
    even by SIGKILL. libc is loaded here, before the fork."""
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    parent = os.getpid()

    def preexec():
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took hold
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def moto_request(port, method, path, body=None, headers=None, timeout=30):
    """(status, parsed body) of a call to moto itself."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        data = None
        headers = dict(headers or {})
        if body is not None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    text = raw.decode(errors="replace")
    try:
        parsed = json.loads(text) if text.strip() else None
    except ValueError:
        parsed = text
    return resp.status, parsed


class Moto:
    def __init__(self):
        self.proc = None
        self.port = None
        log_path = os.environ.get("AWS_ENDPOINT_MOTO_LOG")
        self.log = open(log_path, "ab") if log_path else tempfile.TemporaryFile()

    def start(self):
        env = dict(os.environ)
        env.setdefault("S3_UPLOAD_PART_MIN_SIZE", "5")
        # moto keeps an object in memory up to this size (its default is the
        # part size minus 1 KiB, which a small part size would make negative).
        env.setdefault("MOTO_S3_DEFAULT_KEY_BUFFER_SIZE", str(16 * 1024 * 1024))
        preexec = _die_with_parent_fn()
        for _ in range(3):  # another process may take the free port first
            self.port = free_port()
            # moto's Step Functions interpreter calls moto itself at
            # localhost:$MOTO_PORT (moto.server sets it to its -p port only
            # when unset): make it this moto's port, whatever was inherited.
            env["MOTO_PORT"] = str(self.port)
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=self.log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=preexec,
                close_fds=True,
            )
            if self._wait_ready():
                return
            self.stop()
        raise RuntimeError("moto did not start: " + self.log_tail())

    def _wait_ready(self):
        deadline = time.monotonic() + MOTO_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                status, _ = moto_request(
                    self.port,
                    "GET",
                    "/moto-api/state-manager/get-transition?model_name=glue::crawl",
                    timeout=2,
                )
                if status == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def log_tail(self):
        try:
            self.log.flush()
            self.log.seek(0, os.SEEK_END)
            size = self.log.tell()
            self.log.seek(max(0, size - 2000))
            return self.log.read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def answer(fields, ident=None):
    if ident is not None:
        fields = dict(fields, id=ident)
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def handle(line, moto, proxy):
    """The answer to one command line, and whether to stop after it."""
    try:
        cmd = json.loads(line)
    except ValueError as e:
        return {"ok": False, "error": f"not JSON: {e}"}, False
    if not isinstance(cmd, dict):
        return {"ok": False, "error": "a command is a JSON object"}, False
    op = cmd.get("op")
    try:
        if op == "ping":
            return {"ok": True}, False
        if op == "pids":
            return {"ok": True, "harness": os.getpid(), "moto": moto.proc.pid}, False
        if op == "stop":
            return {"ok": True}, True
        if op == "moto":
            method = cmd.get("method", "POST")
            path = cmd.get("path")
            if not isinstance(path, str) or not path.startswith("/"):
                raise CommandError("path must start with /")
            status, body = moto_request(
                moto.port, method, path, cmd.get("body"), cmd.get("headers")
            )
            return {"ok": True, "status": status, "body": body}, False
        if op == "sfn_interpreter":
            on = cmd.get("on")
            if not isinstance(on, bool):
                raise CommandError("on must be true or false")
            config = {"stepfunctions": {"execute_state_machine": on}}
            status, body = moto_request(moto.port, "POST", "/moto-api/config", config)
            if status not in (200, 201):
                raise CommandError(f"moto answered {status} to /moto-api/config: {body}")
            return {"ok": True}, False
        return dict({"ok": True}, **proxy.command(cmd)), False
    except CommandError as e:
        return {"ok": False, "error": str(e)}, False
    except OSError as e:
        return {"ok": False, "error": f"{op}: {e}"}, False


def main():
    def on_signal(signum, frame):
        raise Stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    moto = Moto()
    proxy = None
    try:
        try:
            moto.start()
            proxy = FaultProxy(
                HOST, moto.port, verbose=os.environ.get("AWS_ENDPOINT_VERBOSE") == "1"
            )
            proxy_port = proxy.start(HOST)
        except (RuntimeError, OSError) as e:
            answer({"error": str(e)})
            return 1
        answer({"endpoint": f"http://{HOST}:{proxy_port}", "moto": f"http://{HOST}:{moto.port}"})
        while True:
            line = sys.stdin.readline()
            if not line:
                break  # EOF: the test is done, or died
            if not line.strip():
                continue
            reply, stop = handle(line, moto, proxy)
            ident = None
            try:
                ident = json.loads(line).get("id")
            except (ValueError, AttributeError):
                pass
            answer(reply, ident)
            if stop:
                break
        return 0
    except Stop:
        return 0
    except BrokenPipeError:
        # Whoever read stdout is gone: say nothing more (not even at exit).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        # Ignore further signals while cleaning up, so moto is always reaped.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if proxy is not None:
            proxy.stop()
        moto.stop()


if __name__ == "__main__":
    sys.exit(main())
