"""A send run: what is due, claimed in batches, sent through the pipeline, recorded."""
