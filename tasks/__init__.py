"""The pipeline steps: one module per DVC stage, each a plain function run_*(cfg) over the chintox library."""
