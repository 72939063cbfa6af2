"""TimescaleDB storage: schema, migrations, batch writer; native partitioning where the extension is absent."""
