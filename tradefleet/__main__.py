from tradefleet.cli import main

main()
