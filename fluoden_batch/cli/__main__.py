"""``python -m fluoden_batch.cli``: the ``fluoden`` command line."""

from fluoden_batch.cli import main

main()
