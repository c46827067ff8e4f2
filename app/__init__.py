"""The Gradio front end of the IWP demo (nothing model-specific lives here)."""
