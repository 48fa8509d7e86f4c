"""Linking: from an item's participants to Business Contacts and Accounts.

The rules, in the order they apply, are documented in the README and in each
module: :mod:`.addresses` (normalisation), :mod:`.screen` (what is not
recorded), :mod:`.rules` (matching and links).
"""
