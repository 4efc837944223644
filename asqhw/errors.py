"""The one exception type for mistakes a user can fix."""


class UserError(Exception):
    """Bad input, a missing tool or file: the message says what is wrong and how to fix it.

    The command-line front end prints it as ``asqhw: error: <message>`` and exits with status 2.
    """
