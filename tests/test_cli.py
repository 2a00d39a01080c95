"""The command line as a whole: every command's parser."""

import argparse

from centrifuge.cli import build_parser


def test_every_option_of_every_command_says_what_it_does() -> None:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    silent = [(name, a.option_strings[0]) for name, p in sub.choices.items() for a in p._actions
              if a.option_strings and not a.help]
    assert silent == []
