"""Subcommands of the ``centrifuge`` CLI, one module each (see ``centrifuge.cli``)."""
