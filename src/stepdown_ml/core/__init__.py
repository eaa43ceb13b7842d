"""What every stage shares: the data contract and its validator, features, recommendation
rules, the model directory format, Arrow and CSV helpers, paths and defaults.

Depends on no other part of the package.
"""
