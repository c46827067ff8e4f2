"""The demo's engine, shared by app/ (Gradio) and the CLI: the unpruned-vs-pruned runner and the input guards."""
