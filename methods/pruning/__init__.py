"""Shared helpers of the pruning methods: feature scores, FLOP-target stepping, pre-training."""
