"""Basics every layer uses: constants, data-set facts, configuration (profiles -> one frozen Config), files
and their formats (atomic writes, checkpoints), the command line's one-line errors."""
