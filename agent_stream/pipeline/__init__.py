"""The voice side of a call: pipecat transport, processors and the per-call pipeline."""
