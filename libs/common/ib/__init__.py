"""Interactive Brokers: the TWS API session shared by the md-gateway and execution providers."""
