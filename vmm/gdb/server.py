"""The stub's thread: a listening socket (TCP or Unix), one gdb client at a time.

The thread waits on the client's socket, the listening socket (a second client is turned
away) and a pipe the vCPUs write to when they queue a stop. It never blocks on the guest: a
client that stops reading is dropped after SEND_TIMEOUT, and a client that disconnects
without detaching is treated as a detach (the guest runs on).
"""
import os
import select
import socket
import stat
import threading

from ..errors import BadInput
from .control import SIGTRAP, Stop
from .protocol import PacketReader
from .connection import Connection

SEND_TIMEOUT = 10.0
POLL_SECONDS = 0.1


def parse_endpoint(text):
    """'tcp:[HOST]:PORT' (HOST 127.0.0.1 when empty) or 'unix:PATH' -> (family, address)."""
    kind, _, rest = text.partition(":")
    if kind == "unix" and rest:
        return socket.AF_UNIX, rest
    if kind == "tcp":
        host, separator, port_text = rest.rpartition(":")
        if not separator:
            host, port_text = "", rest
        host = host.strip("[]") or "127.0.0.1"
        try:
            port = int(port_text)
        except ValueError:
            port = -1
        if 0 <= port <= 65535:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            return family, (host, port)
    raise BadInput(f"{text!r}: expected tcp:[HOST:]PORT or unix:PATH")


def describe(family, address):
    if family == socket.AF_UNIX:
        return f"unix:{address}"
    host, port = address[:2]
    return f"tcp:[{host}]:{port}" if family == socket.AF_INET6 else f"tcp:{host}:{port}"


def listen(family, address):
    """A listening socket (BadInput when the address cannot be used)."""
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_UNIX:
            _remove_stale_socket(address)
        else:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(1)
    except OSError as error:
        listener.close()
        raise BadInput(f"--gdb {describe(family, address)}: cannot listen: {error.strerror or error}") from None
    return listener


def _remove_stale_socket(path):
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(0, f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)   # nobody listens there any more
        return
    finally:
        probe.close()
    raise OSError(0, f"another program listens on {path}")


class Server:
    def __init__(self, controller, monitor, listener, log, image_bits=None):
        self.controller = controller
        self._image_bits = image_bits
        self.monitor = monitor
        self._listener = listener
        self._path = listener.getsockname() if listener.family == socket.AF_UNIX else None
        self.address = describe(listener.family, listener.getsockname())
        self.log = log
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        controller.notify = self._wake
        self._closing = False
        self._thread = threading.Thread(target=self._serve, name="gdb", daemon=True)

    def start(self):
        self._thread.start()

    def _wake(self):
        try:
            os.write(self._wake_write, b"!")
        except BlockingIOError:
            pass   # a wake-up is pending already

    def _drain(self):
        try:
            while os.read(self._wake_read, 256):
                pass
        except BlockingIOError:
            pass

    @property
    def _machine_ended(self):
        return self.controller.machine.outcome is not None

    def _serve(self):
        while not self._closing and not self._machine_ended:
            ready, _, _ = select.select([self._listener, self._wake_read], [], [], POLL_SECONDS)
            if self._wake_read in ready:
                self._drain()
            if self._listener in ready:
                client = self._accept()
                if client is not None:
                    self._connection(*client)

    def _accept(self):
        try:
            client, peer = self._listener.accept()
        except OSError as error:
            self.log(f"accept failed: {error}")
            return None
        client.settimeout(SEND_TIMEOUT)
        return client, peer or "a local client"

    def _connection(self, client, peer):
        self.log(f"client {peer} connected")
        connection = Connection(self.controller, client.sendall, self.log, self.monitor, self._image_bits)
        controller = self.controller
        controller.attach()
        try:
            stop = controller.take_stop()
            if stop is None and not controller.stopped:
                if not controller.interrupt():
                    return
                stop = controller.take_stop()
            connection.stopped(stop or Stop(0, SIGTRAP), tell=False)
            self._converse(client, connection)
        except OSError as error:   # the client went away mid-reply, or stopped reading
            self.log(f"client {peer}: {error.strerror or error}")
        except Exception as error:  # noqa: BLE001 - a bug in the stub: say so, let the guest run on
            self.log(f"internal error: {type(error).__name__}: {error}", always=True)
        finally:
            if self._machine_ended:
                self.log(f"the run has ended: closing the connection to {peer}")
            elif not connection.ended:
                self.log(f"client {peer} left without detaching: the guest runs on")
                controller.detach()
            client.close()

    def _converse(self, client, connection):
        reader = PacketReader()
        while not connection.ended:
            ready, _, _ = select.select([client, self._listener, self._wake_read], [], [], POLL_SECONDS)
            if self._wake_read in ready:
                self._drain()
            if self._listener in ready:
                self._refuse()
            if self._machine_ended:
                if connection.running:
                    connection.exited(self.controller.machine.outcome)
                return
            if self._closing:
                return
            if connection.running:
                stop = self.controller.take_stop()
                if stop is not None:
                    connection.stopped(stop)
            if client in ready:
                data = client.recv(65536)
                if not data:
                    return
                connection.feed(reader.feed(data))

    def _refuse(self):
        try:
            other, peer = self._listener.accept()
        except OSError:
            return
        self.log(f"refused {peer or 'a local client'}: one gdb client at a time")
        other.close()

    def close(self):
        """Stop serving (the run has ended); a waiting gdb is told how."""
        self._closing = True
        self._wake()
        if self._thread.ident is not None:
            self._thread.join()
        self._listener.close()
        if self._path is not None:
            try:
                os.unlink(self._path)
            except OSError:
                pass
        os.close(self._wake_read)
        os.close(self._wake_write)
