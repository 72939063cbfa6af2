"""The `tradefleet` commands, one module per family; tradefleet/cli.py assembles them into the app.

Each command is a thin function: it parses what typer cannot, loads the settings (common.py) and
calls library code, imported inside the function so `tradefleet --help` and shell completion stay
quick and an optional extra (ml, ib, sentiment, rl) is needed only by the commands that use it.
"""
