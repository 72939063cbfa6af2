"""tradefleet: one CLI fronting the fleet."""
