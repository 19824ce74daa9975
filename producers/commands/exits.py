"""Exit codes of the `advisor` command (1 failed, 2 usage, 3 timed out), without imports."""

EXIT_FAILED, EXIT_USAGE, EXIT_TIMEOUT = 1, 2, 3
