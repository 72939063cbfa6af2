"""The sentiment model: MiniLM with LoRA adapters, its training, registry and serving."""
