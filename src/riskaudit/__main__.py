"""``python -m riskaudit``: the same command line as ``riskaudit``."""

from riskaudit.cli import main

if __name__ == "__main__":
    main()
