"""mixcritic: listens to a mix and says which stem is out of balance, and by how many dB.

Pipeline, one module per concern:
    audio -> labels/templates -> toy / dataset (synth, render) -> model -> train / inference
    -> critique / evaluate, with ``cli`` and ``commands/`` as thin Typer front ends.
"""

__version__ = "0.1.0"
