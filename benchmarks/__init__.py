"""`make bench`: measured numbers for the README, never asserted in a timed test."""
