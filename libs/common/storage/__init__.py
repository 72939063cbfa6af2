"""TimescaleDB storage: schema, migrations, batch writer.

Native partitioning where the timescaledb extension is absent.
"""
