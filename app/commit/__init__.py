"""The commit protocol both stages share: `checkpoint.PartitionCheckpoint`."""
