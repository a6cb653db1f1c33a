"""Custom Labels batch pipeline: settings, the console script, the local emulator and the benchmark."""
