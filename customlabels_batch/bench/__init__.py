"""`make bench`: billed model time per batch on the emulator (see README.md beside this file)."""
