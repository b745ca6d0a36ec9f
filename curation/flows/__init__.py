"""Prefect flows and deployments. The only package that imports Prefect."""
