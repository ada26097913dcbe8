"""One module per CLI verb: parse options, load config, call core and the recipe. No ML here."""
