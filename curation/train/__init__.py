"""The bundled training step (TRL) and evaluation."""
