"""The one exception type that means "the user asked for something we cannot do".

The command line turns it into a single line on stderr and exit code 2; everything else is a
bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input. The message says what is wrong and how to fix it, on one line."""

    def __init__(self, what: str, fix: str = ""):
        self.what = what
        self.fix = fix
        super().__init__(f"{what}; {fix}" if fix else what)
