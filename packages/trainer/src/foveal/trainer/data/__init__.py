"""The trainer data path: training samples, image materialization, packing into micro-batches, collation."""
