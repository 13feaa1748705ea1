"""``python -m lifecycle``: the same as the ``lifecycle`` command."""

from lifecycle.cli import main

if __name__ == "__main__":
    main()
