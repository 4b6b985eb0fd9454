"""The command line's one error path: an error the user can act on becomes one line naming the key or file and
the fix (``python -m dlib``, ``python -m dlib.tools.notebooks``, ``python -m dlib.tools.check``); anything else is a
bug and
keeps its traceback."""

from __future__ import annotations

import errno


class UserError(Exception):
    """An error the user can fix (a setting, a file, a folder); its message names it and says how."""


# Errors that come from what the user gave: values, keys, files and folders.
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, ValueError, KeyError, OSError)

_OS_FIXES = {
    errno.ENOSPC: "no space left on the disk holding {file}: free space (or point --out, --cache or "
                  "$DLIB_CACHE_DIR elsewhere) and run again; a training resumes from its last checkpoint",
    errno.EDQUOT: "disk quota exceeded writing {file}: free space and run again",
    errno.EACCES: "cannot write {file} (permission denied): choose a folder you can write (--out, --cache, "
                  "$DLIB_RESULTS_DIR, $DLIB_CACHE_DIR) or change its permissions",
    errno.EPERM: "cannot write {file} (operation not permitted): choose a folder you can write",
    errno.EROFS: "cannot write {file}: its file system is read-only; choose a folder on a writable disk",
    errno.EEXIST: "{file} is a file, not a folder: give a folder there (or move the file away)",
    errno.ENOTDIR: "{file}: a part of this path is a file, not a folder: give a folder path",
    errno.EISDIR: "{file} is a folder where a file is expected: give a file",
}


def one_line(err: BaseException) -> str:
    """The one-line message of a user error: the file-system fix for an OSError that names a file, the message
    itself otherwise (KeyError's text without its quotes, several lines joined)."""
    if isinstance(err, OSError) and err.filename is not None and err.errno in _OS_FIXES:
        return _OS_FIXES[err.errno].format(file=err.filename)
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    return " ".join(str(text).split())  # one line, whatever the message held
