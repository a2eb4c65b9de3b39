"""Print a model's layer table: `python -m digits.summary model=original`.

The same composition as training (any override works: `model=ann model.hidden=[1024,256]`), one forward pass on a
1x28x28 input, torchsummary's layout; for `original` it reproduces the report's table.
"""

from __future__ import annotations

import sys

from digits import cli_args
from digits.errors import UserError, cli

USAGE = """usage: python -m digits.summary [model=NAME] [model.KEY=VALUE ...]

Print a model's layer table (torchsummary's layout, from one forward pass on a 1x28x28 input) and its parameter
count. Takes the same overrides as `python -m digits.train`; only the model's matter.

examples:
  python -m digits.summary                               the report's CNN (187,062 parameters)
  python -m digits.summary model=alexnet
  python -m digits.summary model=ann model.hidden=[1024,256]

models: {models}
"""


@cli
def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(USAGE.format(models=", ".join(cli_args.groups()["model"])), end="")
        return
    flags = [a for a in args if a.startswith("-")]
    if flags:
        raise UserError(f"{flags[0]}: digits.summary takes overrides only (model=NAME, model.KEY=VALUE); see --help")
    cli_args.check_choices(cli_args.parse(args))
    with cli_args.Composer() as composer:
        cfg = composer.compose(args)
    from digits.models import build
    from digits.models.summary import format_table, layer_table

    net = build(cfg.model)
    print(f"model={cfg.model._target_}")
    print(format_table(net, layer_table(net)))


if __name__ == "__main__":
    main()
