"""Print a model's layer table: `python -m digits.summary model=original`.

The same composition as training (any override works: `model=ann model.hidden=[1024,256]`), one forward pass on a
1x28x28 input, torchsummary's layout; for `original` it reproduces the report's table.
"""

from __future__ import annotations

import sys

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from digits import cli_args
from digits.errors import cli


@cli
def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    cli_args.validate(args)
    cli_args.precompose(args)
    with initialize_config_dir(config_dir=str(cli_args.CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=args)
    from digits.models.summary import format_table, layer_table

    net = instantiate(cfg.model)
    print(f"model={cfg.model._target_}")
    print(format_table(net, layer_table(net)))


if __name__ == "__main__":
    main()
