"""CLI commands, one module per area; each decorates functions with `curation.cli.app.command()`."""
