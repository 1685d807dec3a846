from onnxforge.cli.app import main

main()
