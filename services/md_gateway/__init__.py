"""md-gateway: market data from a provider (replay, synthetic; IB later), cleaned, on md.*."""
