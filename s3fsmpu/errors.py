"""The project's exception classes and the one table that maps them to errno.

Every error raised below the FUSE boundary is one of these; they carry the
key and the S3 code so the log line says what S3 answered, and `to_errno`
is the only place that decides what the application sees.
"""

from __future__ import annotations

import errno

# S3 codes that mean "try again later"; classified by code, never by HTTP
# status, because botocore turns a 200 carrying <Error> into a 500.
TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "SlowDown",
        "ServiceUnavailable",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "Throttling",
        "ThrottlingException",
        "OperationAborted",
        "500",
        "502",
        "503",
        "504",
        # raised by the boto3 store for timeouts and dropped connections
        "Timeout",
        "ConnectionError",
        # a copy answered 200 without an ETag: ambiguous, and a copy may be repeated
        "NoETag",
    }
)


class S3FSError(Exception):
    """Base class; `errno` is what the application sees."""

    errno = errno.EIO


class S3Error(S3FSError):
    """An answer from S3 (or the transport) that is not success."""

    def __init__(
        self,
        code: str,
        key: str = "",
        message: str = "",
        operation: str = "",
        status: int | None = None,
    ) -> None:
        self.code = code
        self.key = key
        self.message = message
        self.operation = operation
        self.status = status
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f" {self.operation}" if self.operation else ""
        key = f" key={self.key!r}" if self.key else ""
        msg = f": {self.message}" if self.message else ""
        status = f" (HTTP {self.status})" if self.status else ""
        return f"S3 {self.code}{status}{where}{key}{msg}"

    @property
    def transient(self) -> bool:
        return self.code in TRANSIENT_CODES


class NoSuchKey(S3Error):
    def __init__(self, key: str, operation: str = "") -> None:
        super().__init__("NoSuchKey", key, operation=operation, status=404)


class ObjectChanged(S3Error):
    """The object an open file reads was replaced by another client: its bytes now are
    another version's, so the read fails rather than mix two versions."""

    def __init__(self, key: str, etag: str | None) -> None:
        super().__init__("ObjectChanged", key, f"no longer the version {etag} this open reads",
                         "GetObject", 412)


class UploadFailed(S3FSError):
    """An upload that could not be completed; the data is in `recovery_path`."""

    def __init__(self, key: str, reason: str, recovery_path: str | None = None) -> None:
        self.key = key
        self.reason = reason
        self.recovery_path = recovery_path
        super().__init__(str(self))

    def __str__(self) -> str:
        kept = f"; written bytes kept in {self.recovery_path}" if self.recovery_path else ""
        return f"upload of {self.key!r} failed: {self.reason}{kept}"


class FileTooLarge(S3FSError):
    errno = errno.EFBIG


class ReadOnly(S3FSError):
    errno = errno.EROFS


class NameTooLong(S3FSError):
    errno = errno.ENAMETOOLONG


class NotFound(S3FSError):
    errno = errno.ENOENT


class NotEmpty(S3FSError):
    errno = errno.ENOTEMPTY


class Exists(S3FSError):
    errno = errno.EEXIST


class IsADirectory(S3FSError):
    errno = errno.EISDIR


class NotADirectory(S3FSError):
    errno = errno.ENOTDIR


class NotSupported(S3FSError):
    errno = errno.EOPNOTSUPP


class InvalidArgument(S3FSError):
    errno = errno.EINVAL


# S3 codes with an errno more precise than EIO.
_S3_CODE_ERRNO = {
    "NoSuchKey": errno.ENOENT,
    "NotFound": errno.ENOENT,
    "404": errno.ENOENT,
    "AccessDenied": errno.EACCES,
    "403": errno.EACCES,
    "AllAccessDisabled": errno.EACCES,
    # a key over 1,024 bytes
    "KeyTooLongError": errno.ENAMETOOLONG,
    "EntityTooLarge": errno.EFBIG,
    # quota-like refusals: the closest thing a shell prints sensibly
    "QuotaExceeded": errno.ENOSPC,
    # NFS's word for a file replaced under an open descriptor: reopen to read the new one
    "ObjectChanged": errno.ESTALE,
}


def to_errno(exc: BaseException) -> int:
    """The errno the application sees for `exc`; EIO for anything unforeseen."""
    if isinstance(exc, S3Error):
        return _S3_CODE_ERRNO.get(exc.code, errno.EIO)
    if isinstance(exc, S3FSError):
        return exc.errno
    if isinstance(exc, OSError) and exc.errno:
        # local spool I/O (disk full shows as ENOSPC)
        return exc.errno
    return errno.EIO


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report from a nursery's group: the first of ours, else the first at all.

    trio nurseries raise ExceptionGroups; callers (and the errno table) expect one error.
    """
    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for inner in e.exceptions:
                walk(inner)
        else:
            leaves.append(e)

    walk(group)
    return next((e for e in leaves if isinstance(e, S3FSError)), leaves[0])
