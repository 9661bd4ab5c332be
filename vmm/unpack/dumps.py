"""The dump directory of an unpacking run: each layer's region (identical contents written
once) and its record, every file complete or absent whatever ends the run."""
import hashlib
import json
import os
import tempfile

from ..errors import BadInput, OutputError


class DumpError(OutputError):
    """A dump could not be written (the disk is full, the directory went away)."""


class LayerFiles:
    """DIR/NAME.bin for each distinct region's contents and DIR/NAME.json for each record."""

    def __init__(self, path):
        self.directory = _dump_directory(path)
        self._dumped = {}                # sha256 -> file name: identical contents are written once

    def region(self, name, data):
        """(sha256, file name) of a region's contents: NAME.bin, or the earlier file with the
        same contents."""
        digest = hashlib.sha256(data).hexdigest()
        data_file = self._dumped.get(digest)
        if data_file is None:
            data_file = f"{name}.bin"
            _write_atomically(os.path.join(self.directory, data_file), data)
            self._dumped[digest] = data_file
        return digest, data_file

    def record(self, name, record):
        _write_atomically(os.path.join(self.directory, f"{name}.json"), (json.dumps(record, indent=2) + "\n").encode())


def _dump_directory(path):
    """The dump directory, created if missing; BadInput when it cannot be written."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise BadInput(f"{path}: cannot create the dump directory: {error.strerror}") from None
    if not os.path.isdir(path) or not os.access(path, os.W_OK | os.X_OK):
        raise BadInput(f"{path}: the dump directory is not a writable directory")
    return path


def _write_atomically(path, data):
    """A dump file is complete or absent: written beside, then renamed into place."""
    directory = os.path.dirname(path)
    try:
        descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".partial-")
    except OSError as error:
        raise DumpError(f"{path}: cannot write the dump: {error.strerror}") from None
    try:
        with os.fdopen(descriptor, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except OSError as error:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise DumpError(f"{path}: cannot write the dump: {error.strerror}") from None
