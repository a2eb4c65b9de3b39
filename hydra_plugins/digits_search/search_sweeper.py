"""Hydra finds sweepers only under hydra_plugins: this names digits.search's sweeper there."""

from digits.search import SearchSweeperBase


class SearchSweeper(SearchSweeperBase):
    """`hydra/sweeper=search`: Optuna ask-and-tell over the configured launcher (digits/search.py)."""
