"""The exception types that mean "the user asked for something we cannot do".

The command line turns it into a single line on stderr and exit code 2; everything else is a
bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input. The message says what is wrong and how to fix it, on one line."""

    def __init__(self, what: str, fix: str = ""):
        self.what = what
        self.fix = fix
        super().__init__(f"{what}; {fix}" if fix else what)


class WriteError(UserError):
    """A file could not be written: the disk is full or the folder is not writable (any more)."""

    def __init__(self, path, exc: OSError):
        import errno
        self.path = path
        # What to do before running again: a folder in the way is not a full disk.
        self.remedy = ("move that folder away (normlab writes a file of that name)" if exc.errno == errno.EISDIR
                       else "free some disk space or make the folder writable")
        super().__init__(f"cannot write {path} ({exc.strerror or exc})", f"{self.remedy}, then run the command again")
