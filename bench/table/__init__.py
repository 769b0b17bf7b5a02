"""The rows of the benchmark's markdown table, by what they measure."""
