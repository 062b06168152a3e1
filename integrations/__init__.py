"""Adapters that put the UniSync loss into existing talking-face trainers (run from the checkout, never installed)."""
