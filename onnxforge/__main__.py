from onnxforge.cli.app import main

if __name__ == "__main__":  # `onnxforge zoo` starts worker processes that import this module again
    main()
