"""`make bench`: measured numbers for docs/performance.md, never asserted in a timed test."""
