"""Run the fluoden command line from a checkout: ``python cli.py --help``."""

from fluoden_batch.cli import main

if __name__ == "__main__":
    main()
