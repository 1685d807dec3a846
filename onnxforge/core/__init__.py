"""What every layer uses: errors and exit codes, the result types, files (fileio),
the option machinery (options), the machine (system, memory), progress, logs and
statistics. Nothing here imports the rest of onnxforge."""
