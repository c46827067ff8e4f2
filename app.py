"""Hugging Face Spaces entry point: load the model named by IWP_MODEL once, build the demo, serve it."""
import os

from iwp.demo.inputs import MAX_UPLOAD
from iwp.demo.runner import Runner
from app.ui import build_demo

runner = Runner.load(os.environ.get("IWP_MODEL"))
if not os.environ.get("SPACES_ZERO_GPU"):    # on ZeroGPU the GPU exists only inside @spaces.GPU calls
    runner.warmup()
demo = build_demo(runner)

if __name__ == "__main__":
    # server_name: GRADIO_SERVER_NAME if set (Spaces sets 0.0.0.0), else gradio's default 127.0.0.1
    demo.launch(server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")), max_file_size=MAX_UPLOAD)
