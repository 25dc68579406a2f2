"""lorahelpers: fine-tune an LLM with LoRA, export it to GGUF, and chat with it in Ollama.

Each pipeline stage is its own module; import the one you need:

    from lorahelpers import data, chat, models, training, export, verify, ollama

Importing the package itself is cheap (no torch).
"""

__version__ = "0.1.0"
