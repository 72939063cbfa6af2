from tradefleet.cli import run_service

run_service("md-gateway")
