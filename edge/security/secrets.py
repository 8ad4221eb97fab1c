"""Secrets (broker passwords and the like) from a file or a systemd credential, never from argv or config text.

A systemd unit passes a credential with `LoadCredential=NAME:/etc/meal-edge/secret-file`; the service then
finds it as `$CREDENTIALS_DIRECTORY/NAME` (readable only by the service). Outside systemd, a plain file is
used, which must not be readable by other users. The value is never logged nor put in an exception
message: errors name the file and the problem only.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

#: a secret larger than this is a wrong file (a certificate bundle, a log), not a password
MAX_SECRET_BYTES = 64 * 1024
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"


class SecretError(ValueError):
    """A secret that cannot be read, phrased for the operator (which file or credential, what to do)."""


def credential_path(name: str) -> Path:
    """Where systemd put the credential `name` for this service (`LoadCredential=name:...`)."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise SecretError(f"{name!r} is not a credential name (a plain file name, as in LoadCredential=NAME:...)")
    folder = os.environ.get(CREDENTIALS_ENV)
    if not folder:
        raise SecretError(
            f"credential {name!r}: ${CREDENTIALS_ENV} is not set; run under systemd with "
            f"LoadCredential={name}:/path/to/secret, or give the secret as a file instead"
        )
    return Path(folder) / name


def read_secret_file(path: Path | str, what: str = "secret") -> bytes:
    """The bytes of a secret file. Refused: a missing, empty, oversized or non-regular file, and a file
    any other user may read (mode bit o+r) or write (g+w, o+w)."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY)
    except FileNotFoundError:
        raise SecretError(f"{what}: {p} not found") from None
    except OSError as e:
        raise SecretError(f"{what}: cannot open {p}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)  # the opened file, not the path: no swapping it between check and read
        if not stat.S_ISREG(st.st_mode):
            raise SecretError(f"{what}: {p} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o004:
            raise SecretError(
                f"{what}: {p} is readable by every user (mode {mode:04o}); run `chmod 600 {p}` "
                "(or 640 with a group only the service is in) and change the secret if others may have read it"
            )
        if mode & 0o022:
            raise SecretError(f"{what}: {p} is writable by others (mode {mode:04o}); run `chmod 600 {p}`")
        if st.st_size > MAX_SECRET_BYTES:
            raise SecretError(f"{what}: {p} is {st.st_size} bytes, not a secret (at most {MAX_SECRET_BYTES})")
        chunks = []
        while chunk := os.read(fd, MAX_SECRET_BYTES + 1):
            chunks.append(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > MAX_SECRET_BYTES:
        raise SecretError(f"{what}: {p} is larger than {MAX_SECRET_BYTES} bytes, not a secret")
    return data


def read_secret(*, file: Path | str | None = None, credential: str | None = None, what: str = "secret") -> str:
    """One secret as text, from exactly one of `file` or a systemd `credential` name. One trailing newline
    (as `echo` writes) is removed; an empty secret is refused."""
    if (file is None) == (credential is None):
        raise SecretError(f"{what}: give either a file or a systemd credential name")
    path = credential_path(credential) if credential is not None else Path(file)  # type: ignore[arg-type]
    source = f"{what} (credential {credential!r})" if credential is not None else what
    data = read_secret_file(path, source)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(f"{source}: {path} is not UTF-8 text") from None
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise SecretError(f"{source}: {path} is empty")
    return text


def write_new_secret(path: Path, data: bytes, *, prefix: str = ".secret-") -> bool:
    """Write a key file that must not replace one: `data` goes to a 0600 temporary file in `path`'s folder
    (which must exist), fsync'd, then hard-linked to `path`. False when a file is already there (it is kept;
    another process may have made it meanwhile). The folder is fsync'd after a new link, so the file survives a
    power cut. OSError for any other failure; the temporary file never stays behind. Used for the kiosk's
    signing key (edge.security.signing), its template key (edge.security.atrest) and the district's roster
    keys (district/roster/keys.py)."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=path.parent)  # mkstemp: 0600, O_EXCL
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    _fsync_dir(path.parent)
    return True


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
